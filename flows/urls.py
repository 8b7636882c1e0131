from django.urls import path

from flows import views

app_name = "flows"
urlpatterns = [
    path("", views.flow_list, name="list"),
    path("<int:pk>/", views.detail, name="detail"),
]
