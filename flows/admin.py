from django.contrib import admin

from flows.models import ConnectionShape, ProcessFlow


class ConnectionShapeInline(admin.TabularInline):
    model = ConnectionShape
    extra = 0
    raw_id_fields = ["instance", "endpoint"]


@admin.register(ProcessFlow)
class ProcessFlowAdmin(admin.ModelAdmin):
    list_display = ["name", "company", "enabled", "updated_at"]
    list_filter = ["enabled", "company"]
    search_fields = ["name", "company__name"]
    list_select_related = ["company"]
    inlines = [ConnectionShapeInline]
