from django.contrib import admin

from connectors.models import AuthMethod, Connector, ConnectorChange, Endpoint, Variable
from patchworks_site.admin import ReadOnlyAdmin


class VariableInline(admin.TabularInline):
    model = Variable
    extra = 0
    fields = ["key", "label", "alias", "default", "required", "configurable", "advanced", "secret", "auth_method"]


class AuthMethodInline(admin.StackedInline):
    model = AuthMethod
    extra = 0


class EndpointInline(admin.TabularInline):
    model = Endpoint
    extra = 0
    fields = ["key", "name", "entity", "direction", "method", "path", "position"]


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    list_display = ["name", "company", "system_type", "version", "protocol", "updated_by", "updated_at"]
    list_filter = ["system_type", "company"]
    search_fields = ["name", "company__name"]
    list_select_related = ["company", "updated_by"]
    readonly_fields = ["created_at", "updated_at", "created_by", "updated_by"]
    inlines = [VariableInline, AuthMethodInline, EndpointInline]


@admin.register(AuthMethod)
class AuthMethodAdmin(admin.ModelAdmin):
    list_display = ["name", "connector", "type", "test_method", "test_path"]
    list_filter = ["type"]
    search_fields = ["name", "connector__name"]
    list_select_related = ["connector"]


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ["name", "connector", "entity", "direction", "method", "path"]
    list_filter = ["direction", "method"]
    search_fields = ["name", "entity", "path", "connector__name"]
    list_select_related = ["connector"]


@admin.register(ConnectorChange)
class ConnectorChangeAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "connector", "action", "user", "summary"]
    list_filter = ["action"]
    search_fields = ["connector__name", "connector__company__name", "summary", "user__username"]
    list_select_related = ["connector", "user"]
