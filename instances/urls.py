from django.urls import path

from instances import views

app_name = "instances"
urlpatterns = [
    path("new/<int:connector_pk>/", views.new, name="new"),
    path("<int:pk>/", views.settings_page, name="settings"),
]
