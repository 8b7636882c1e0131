from django.contrib import admin

from flows.models import FlowRun, FlowRunShape, FlowSchedule, PeriodicJobRun, ProcessFlow, Shape


class ConnectionShapeInline(admin.TabularInline):
    model = Shape
    extra = 0
    raw_id_fields = ["instance", "endpoint"]


@admin.register(ProcessFlow)
class ProcessFlowAdmin(admin.ModelAdmin):
    list_display = ["name", "company", "enabled", "updated_at"]
    list_filter = ["enabled", "company"]
    search_fields = ["name", "company__name"]
    list_select_related = ["company"]
    inlines = [ConnectionShapeInline]


class FlowRunShapeInline(admin.TabularInline):
    model = FlowRunShape
    extra = 0
    can_delete = False
    fields = ["position", "shape_name", "status", "items_in", "items_out", "requests", "errors"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(FlowRun)
class FlowRunAdmin(admin.ModelAdmin):
    """Runs are written by workers; the admin only looks."""

    list_display = ["pk", "flow", "company", "status", "trigger", "queued_at", "started_at", "finished_at", "worker"]
    list_filter = ["status", "trigger", "company"]
    list_select_related = ["flow", "company"]
    search_fields = ["flow__name", "company__name"]
    inlines = [FlowRunShapeInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(FlowSchedule)
class FlowScheduleAdmin(admin.ModelAdmin):
    """Schedules are added on the flow page, whose form validates them and computes the next run."""

    list_display = ["flow", "description", "cron", "next_run_at", "last_run_at", "skipped_count"]
    list_select_related = ["flow"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PeriodicJobRun)
class PeriodicJobRunAdmin(admin.ModelAdmin):
    """Which worker ran each periodic job in each period (the newest tick says the workers are alive)."""

    list_display = ["job", "period_start", "started_at", "worker"]
    list_filter = ["job"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
