from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from patchworks_site import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="connectors:manage", permanent=False), name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("connectors/", include("instances.connector_urls")),
    path("instances/", include("instances.urls")),
    path("flows/", include("flows.urls")),
    path("marketplace/", include("marketplace.urls")),
    path("alerts/", include("alerts.urls")),
    path("audit/", views.audit_log, name="audit_log"),
    path("settings/company/", views.company_settings, name="company_settings"),
    path("sandbox/", include("sandbox.urls")),
    path("admin/system-health/", admin.site.admin_view(views.system_health), name="system_health"),
    path("admin/", admin.site.urls),
    path("metrics", views.metrics_endpoint, name="metrics"),
]

handler403 = "patchworks_site.views.permission_denied"
