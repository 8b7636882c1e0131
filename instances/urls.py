from django.urls import path

from instances import pool_views, views

app_name = "instances"
urlpatterns = [
    path("new/<int:connector_pk>/", views.new, name="new"),
    path("date-preview/", views.date_preview, name="date_preview"),
    path("oauth/callback/", views.oauth_callback, name="oauth_callback"),
    path("check-schedule/", views.check_schedule, name="check_schedule"),
    path("<int:pk>/", views.settings_page, name="settings"),
    path("<int:pk>/check/", views.check_now, name="check"),
    path("<int:pk>/remove/", views.remove, name="remove"),
    path("<int:pk>/rate-limit-pause/clear/", views.clear_rate_limit_pause, name="clear_rate_limit_pause"),
    path("pools/", pool_views.pool_list, name="pools"),
    path("pools/new/", pool_views.pool_new, name="pool_new"),
    path("pools/<int:pk>/", pool_views.pool_edit, name="pool_edit"),
    path("pools/<int:pk>/delete/", pool_views.pool_delete, name="pool_delete"),
]
