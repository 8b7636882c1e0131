from django.urls import path

from flows import views

app_name = "flows"
urlpatterns = [
    path("", views.flow_list, name="list"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/shapes/<int:shape_pk>/remove/", views.remove_shape, name="remove_shape"),
    path("<int:pk>/toggle/", views.toggle, name="toggle"),
    path("<int:pk>/delete/", views.delete, name="delete"),
]
