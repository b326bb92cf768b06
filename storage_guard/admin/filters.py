"""The changelist's filters: choices that need no table scan."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.utils import timezone
from django.utils.translation import gettext_lazy

from storage_guard.models import SaveAttempt
from storage_guard.saving.classification import CATEGORIES


class ErrorCodeFilter(admin.SimpleListFilter):
    """Codes seen in the last 30 days (an index range scan), plus the one selected."""

    title, parameter_name = gettext_lazy("error code"), "error_code"

    def lookups(self, request, model_admin):
        since = timezone.now() - timedelta(days=30)
        codes = set(SaveAttempt.objects.filter(created_at__gte=since).exclude(error_code="")
                    .values_list("error_code", flat=True).distinct()[:50])
        if self.value():
            codes.add(self.value())
        return [(code, code) for code in sorted(codes)]

    def queryset(self, request, queryset):
        return queryset.filter(error_code=self.value()) if self.value() else queryset


class CategoryFilter(admin.SimpleListFilter):
    title, parameter_name = gettext_lazy("error category"), "error_category"

    def lookups(self, request, model_admin):
        return [(category, category) for category in CATEGORIES]

    def queryset(self, request, queryset):
        return queryset.filter(error_category=self.value()) if self.value() else queryset


class StorageFilter(admin.SimpleListFilter):
    title, parameter_name = gettext_lazy("storage"), "storage_alias"

    def lookups(self, request, model_admin):
        from storage_guard.storage import guarded_aliases

        return [(alias, alias) for alias in guarded_aliases()]

    def queryset(self, request, queryset):
        return queryset.filter(storage_alias=self.value()) if self.value() else queryset
