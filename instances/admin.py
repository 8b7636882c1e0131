from django.contrib import admin

from instances.models import ConnectionPool, Instance


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
    readonly_fields = ["uid", "secrets_key", "last_checked_at", "last_check_ok", "last_check_message", "created_at", "updated_at"]

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
