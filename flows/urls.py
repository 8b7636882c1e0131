from django.urls import path

from flows import views

app_name = "flows"
urlpatterns = [
    path("", views.flow_list, name="list"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/shapes/<int:shape_pk>/", views.shape_settings, name="shape"),
    path("<int:pk>/shapes/<int:shape_pk>/move/", views.move_shape, name="move_shape"),
    path("<int:pk>/shapes/<int:shape_pk>/remove/", views.remove_shape, name="remove_shape"),
    path("<int:pk>/shapes/<int:shape_pk>/test/", views.test_step, name="test_step"),
    path("<int:pk>/shapes/<int:shape_pk>/test/<int:run_pk>/", views.test_result, name="test_result"),
    path("<int:pk>/toggle/", views.toggle, name="toggle"),
    path("<int:pk>/delete/", views.delete, name="delete"),
    path("<int:pk>/run/", views.run_now, name="run_now"),
    path("<int:pk>/schedules/", views.add_schedule, name="add_schedule"),
    path("<int:pk>/schedules/form/", views.schedule_form, name="schedule_form"),
    path("<int:pk>/schedules/<int:schedule_pk>/remove/", views.remove_schedule, name="remove_schedule"),
    path("<int:pk>/runs/", views.run_log, name="flow_runs"),
    path("runs/", views.run_log, name="runs"),
    path("runs/export.csv", views.export_runs, name="export_runs"),
    path("<int:pk>/runs/export.csv", views.export_runs, name="export_flow_runs"),
    path("runs/<int:run_pk>/", views.run_detail, name="run"),
    path("runs/<int:run_pk>/steps/<int:step_pk>/", views.run_step, name="run_step"),
    path("runs/<int:run_pk>/payloads/<int:payload_pk>/", views.run_payload, name="run_payload"),
    path("runs/<int:run_pk>/requests/<int:request_pk>/", views.run_request, name="run_request"),
    path("runs/<int:run_pk>/stop/", views.stop_run, name="stop_run"),
    path("runs/<int:run_pk>/retry/", views.retry_run, name="retry_run"),
]
