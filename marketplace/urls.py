from django.urls import path

from marketplace import views

app_name = "marketplace"
urlpatterns = [
    path("", views.browse, name="browse"),
    path("updates/<int:connector_pk>/", views.update, name="update"),
    path("<slug:slug>/", views.detail, name="detail"),
    path("<slug:slug>/install/", views.install, name="install"),
]
