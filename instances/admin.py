from django.contrib import admin

from instances.models import ConnectionPool, CredentialCheck, Instance
from patchworks_site.admin import ReadOnlyAdmin


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = [
        "name", "connector", "company", "auth_method", "last_check_ok", "last_checked_at",
        "rate_limit_amount", "rate_limit_unit", "connection_pool",
    ]
    list_filter = ["last_check_ok", "rate_limit_unit", "company"]
    search_fields = ["name", "connector__name", "company__name"]
    list_select_related = ["connector", "company", "auth_method", "connection_pool"]
    # The encrypted credentials are never shown, not even as ciphertext.
    exclude = ["secrets_ciphertext"]
    readonly_fields = [
        "uid", "secrets_key", "credentials_approved_for", "reauth_reason",
        "last_checked_at", "last_check_ok", "last_check_message", "created_at", "updated_at",
    ]

    @admin.display(description="Credentials")
    def secrets_key(self, obj: Instance) -> str:
        return f"encrypted under key {obj.secrets_key_id}" if obj.secrets_ciphertext else "none stored"


@admin.register(ConnectionPool)
class ConnectionPoolAdmin(admin.ModelAdmin):
    list_display = ["name", "company", "limit", "timeout_seconds"]
    list_filter = ["company"]
    search_fields = ["name", "company__name"]
    list_select_related = ["company"]
    filter_horizontal = ["connectors"]


@admin.register(CredentialCheck)
class CredentialCheckAdmin(ReadOnlyAdmin):
    """Staff review every company's checks; records were redacted before they were saved."""

    list_display = ["created_at", "company", "connector", "instance", "ok", "response_status", "duration_ms", "created_by"]
    list_filter = ["ok", "company"]
    search_fields = ["instance__name", "connector__name", "company__name", "request_url", "message"]
    list_select_related = ["company", "connector", "instance", "created_by"]

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_staff

    def has_module_permission(self, request) -> bool:
        return request.user.is_staff
