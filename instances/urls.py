from django.urls import path

from instances import views

app_name = "instances"
urlpatterns = [
    path("new/<int:connector_pk>/", views.new, name="new"),
    path("date-preview/", views.date_preview, name="date_preview"),
    path("<int:pk>/", views.settings_page, name="settings"),
    path("<int:pk>/check/", views.check_now, name="check"),
    path("<int:pk>/remove/", views.remove, name="remove"),
]
