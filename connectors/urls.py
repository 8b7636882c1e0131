from django.urls import path

from connectors import views

app_name = "connectors"
urlpatterns = [
    path("", views.manage, name="manage"),
    path("<int:pk>/", views.detail, name="detail"),
]
