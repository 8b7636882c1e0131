from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from patchworks_site.models import AuditEntry, Company, User


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records written by the application (logs, checks): viewable, never added or edited."""

    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]


@admin.register(User)
class CompanyUserAdmin(UserAdmin):
    list_display = ["username", "email", "company", "role", "is_staff", "is_active"]
    list_filter = ["company", "role", "is_staff", "is_active"]
    list_select_related = ["company"]
    fieldsets = UserAdmin.fieldsets + (("Company", {"fields": ("company", "role")}),)
    add_fieldsets = UserAdmin.add_fieldsets + (("Company", {"fields": ("company", "role")}),)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Read-only: the log is written by the audit module, never edited by hand."""

    list_display = ["created_at", "company", "user", "action", "object_type", "object_repr"]
    list_filter = ["action", "object_type", "company"]
    search_fields = ["object_repr", "object_type", "user__username", "company__name"]
    list_select_related = ["company", "user"]

    def has_delete_permission(self, request, obj=None) -> bool:
        # Only so a superuser can still delete a whole company (its log goes with it).
        return request.user.is_superuser
