from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from patchworks_site.models import Company, User


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
