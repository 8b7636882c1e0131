from django.urls import path

from alerts import views

app_name = "alerts"
urlpatterns = [
    path("", views.alert_list, name="list"),
    path("<int:pk>/", views.alert_detail, name="detail"),
    path("deliveries/<int:pk>/send-again/", views.send_again, name="send_again"),
    path("rules/", views.rules, name="rules"),
    path("rules/<int:pk>/", views.rule_edit, name="rule"),
    path("rules/<int:pk>/remove/", views.rule_delete, name="rule_delete"),
    path("channels/<int:pk>/remove/", views.channel_delete, name="channel_delete"),
    path("channels/<int:pk>/new-secret/", views.channel_new_secret, name="channel_new_secret"),
]
