from django.urls import path

from connectors import builder_views, views

# Mounted under /connectors/ by instances.connector_urls, beside the manage page and
# a connector's instances, which live with the instances they list.
app_name = "connectors"
urlpatterns = [
    path("new/", builder_views.new_connector, name="new"),
    path("import/", builder_views.import_manifest, name="import_manifest"),
    path("import/openapi/", builder_views.import_openapi, name="import_openapi"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/build/<slug:step>/", builder_views.build, name="build"),
    path("<int:pk>/manifest/", builder_views.edit_manifest, name="edit_manifest"),
    path("<int:pk>/manifest.yaml", builder_views.download_manifest, name="download_manifest"),
    path("<int:pk>/history/", views.history, name="history"),
    path("<int:pk>/history/<int:change_pk>/", views.change, name="change"),
    path("<int:pk>/remove/", builder_views.remove, name="remove"),
    path("<int:pk>/icon/", builder_views.icon, name="icon"),
]
