"""The admin for ``SaveAttempt``: review failed saves, retry them, give up on them, see trends.

Records are evidence, so the admin is read-only: nobody adds, edits or deletes them by hand.
Users with ``storage_guard.change_saveattempt`` may run the actions ("Retry now", "Mark
abandoned") and download stashed bytes. Built to stay quick with millions of rows: no full
table count (``show_full_result_count = False``, a paginator that stops counting at
``COUNT_CAP``), no filter facets, filters whose choices need no table scan, a date hierarchy
drawn from two index lookups instead of ``SELECT DISTINCT`` over dates, and a default order
that matches the ``(status, -created_at)`` index. See ``docs/admin.md``.
"""

from __future__ import annotations

import calendar
import json
import posixpath
from datetime import timedelta
from functools import cached_property

from django.contrib import admin, messages
from django.contrib.admin import ShowFacets
from django.core.exceptions import PermissionDenied
from django.core.files.storage import storages
from django.core.paginator import Paginator
from django.db.models import Count, Max, Min, Q, Sum
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from storage_guard import replay, stash
from storage_guard.classification import CATEGORIES
from storage_guard.models import UNRESOLVED, SaveAttempt, StashBackend, Status, key_digest

COUNT_CAP = 10_000
ACTION_LIMIT = 100  # records one "Retry now" click replays inside a web request
KEY_CHARS = 60
BADGE_COLOURS = {
    Status.SUCCEEDED: "#2e7d32", Status.RECOVERED: "#1565c0", Status.DEFERRED: "#ef6c00",
    Status.FAILED: "#c62828", Status.REJECTED: "#6a1b9a", Status.ABANDONED: "#616161",
    Status.CANCELLED: "#455a64",
}
HEX = set("0123456789abcdef")


class CappedCountPaginator(Paginator):
    """Counts at most ``COUNT_CAP + 1`` rows (``SELECT COUNT(*) FROM (... LIMIT n)``)."""

    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        counted = self.object_list.order_by()[: self.cap + 1].count()
        self.capped = counted > self.cap
        return min(counted, self.cap)

    capped = False


def human_size(size: int | None) -> str:
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


# --------------------------------------------------------------------- filters
class ErrorCodeFilter(admin.SimpleListFilter):
    """Codes seen in the last 30 days (an index range scan), plus the one selected."""

    title, parameter_name = "error code", "error_code"

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
    title, parameter_name = "error category", "error_category"

    def lookups(self, request, model_admin):
        return [(category, category) for category in CATEGORIES]

    def queryset(self, request, queryset):
        return queryset.filter(error_category=self.value()) if self.value() else queryset


class StorageFilter(admin.SimpleListFilter):
    title, parameter_name = "storage", "storage_alias"

    def lookups(self, request, model_admin):
        from storage_guard.doctor import guarded_aliases

        return [(alias, alias) for alias in guarded_aliases()]

    def queryset(self, request, queryset):
        return queryset.filter(storage_alias=self.value()) if self.value() else queryset


# --------------------------------------------------------------------- the admin
@admin.register(SaveAttempt)
class SaveAttemptAdmin(admin.ModelAdmin):
    list_display = ("status_badge", "short_key", "key_bytes", "size_display", "error_code",
                    "attempts", "duration_display", "created_at")
    list_display_links = ("short_key",)
    list_filter = ("status", ErrorCodeFilter, CategoryFilter, StorageFilter,
                   ("created_at", admin.DateFieldListFilter))
    search_fields = ("key",)
    search_help_text = ("Exact key, SHA-256 or request id (indexed); anything else searches "
                        "keys by substring, which reads the whole table.")
    date_hierarchy = "created_at"
    ordering = ("status", "-created_at")
    list_per_page = 50
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    actions = ("retry_now", "mark_abandoned")
    change_list_template = "admin/storage_guard/saveattempt/change_list.html"
    fieldsets = (
        ("Save", {"fields": ("status_badge", "full_key", "storage_alias", "bucket", "name",
                             "key_bytes", "size_display", "content_type", "sha256",
                             "created_at", "updated_at", "recovered_at", "next_retry_at")}),
        ("Last error", {"fields": ("error_code", "error_category", "transient",
                                   "error_message", "request_id", "host_id",
                                   "error_response_pretty")}),
        ("Attempts", {"fields": ("attempts", "duration_display", "attempt_table")}),
        ("Stashed bytes", {"fields": ("stash_link",)}),
        ("Retry history of this key", {"fields": ("key_history",)}),
    )
    readonly_fields = tuple(name for _title, options in fieldsets for name in options["fields"])

    # ------------------------------------------------------------ read-only evidence
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request) -> bool:
        """May run the actions and download stashed bytes."""
        return request.user.has_perm("storage_guard.change_saveattempt")

    # ------------------------------------------------------------ columns
    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        colour = BADGE_COLOURS.get(obj.status, "#424242")
        return format_html('<span class="sg-badge sg-{}" style="background:{};color:#fff;'
                           'padding:2px 8px;border-radius:10px;font-size:11px;'
                           'white-space:nowrap">{}</span>', obj.status, colour, obj.status)

    @admin.display(description="key")
    def short_key(self, obj):
        short = obj.key if len(obj.key) <= KEY_CHARS else (
            obj.key[: KEY_CHARS // 2 - 1] + "…" + obj.key[-(KEY_CHARS // 2):])
        return format_html('<span title="{}">{}</span>', obj.key, short)

    @admin.display(description="size", ordering="size")
    def size_display(self, obj):
        return human_size(obj.size)

    @admin.display(description="duration", ordering="duration_ms")
    def duration_display(self, obj):
        return f"{obj.duration_ms / 1000:.2f} s" if obj.duration_ms >= 1000 \
            else f"{obj.duration_ms:.0f} ms"

    # ------------------------------------------------------------ detail
    @admin.display(description="full key")
    def full_key(self, obj):
        return format_html('<code style="word-break:break-all">{}</code>', obj.key)

    @admin.display(description="error response")
    def error_response_pretty(self, obj):
        if not obj.error_response:
            return "—"
        return format_html("<pre>{}</pre>", json.dumps(obj.error_response, indent=2,
                                                         sort_keys=True, default=str))

    @admin.display(description="every attempt")
    def attempt_table(self, obj):
        return render_to_string("storage_guard/attempt_table.html",
                                {"attempts": obj.attempt_log or []})

    @admin.display(description="stash")
    def stash_link(self, obj):
        if not obj.has_stash:
            return "no stashed bytes (delivered, freed, or never stashed)"
        url = reverse("admin:storage_guard_saveattempt_stash", args=[obj.pk])
        where = "database" if obj.stash_backend == StashBackend.DATABASE else obj.stash_location
        return format_html('<a href="{}" class="sg-download">Download the stashed bytes</a> '
                           "({}, {})", url, human_size(obj.size), where)

    @admin.display(description="other records with this key")
    def key_history(self, obj):
        others = (SaveAttempt.objects.filter(key_digest=key_digest(obj.key)).exclude(pk=obj.pk)
                  .order_by("-created_at")[:50])
        return render_to_string("storage_guard/key_history.html", {"records": others})

    # ------------------------------------------------------------ search
    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        exact = Q(key_digest=key_digest(term)) | Q(request_id=term)
        if len(term) == 64 and set(term.lower()) <= HEX:
            exact |= Q(sha256=term.lower())
        if queryset.filter(exact).exists():
            return queryset.filter(exact), False
        return queryset.filter(key__contains=term), False

    # ------------------------------------------------------------ actions
    @admin.action(description="Retry now", permissions=["operate"])
    def retry_now(self, request, queryset):
        ids = list(queryset.order_by("created_at").values_list("pk", flat=True)[:ACTION_LIMIT + 1])
        if len(ids) > ACTION_LIMIT:
            self.message_user(request, f"Select at most {ACTION_LIMIT} records to retry from "
                              f"the admin; use `manage.py retry_failed_saves` for more.",
                              messages.ERROR)
            return None
        result = replay.replay_ids(ids, via="admin")
        level = messages.SUCCESS if result.ok else messages.WARNING
        self.message_user(request, f"Retry: {result.summary()}.", level)
        for item in result.items:
            if item.outcome == replay.FAILED:
                self.message_user(request, f"#{item.record_id} failed again: {item.code}",
                                  messages.WARNING)
            elif item.outcome == replay.SKIPPED:
                self.message_user(request, f"#{item.record_id} skipped: {item.reason}",
                                  messages.INFO)
        return None

    @admin.action(description="Mark abandoned", permissions=["operate"])
    def mark_abandoned(self, request, queryset):
        records = list(queryset.filter(status__in=UNRESOLVED).order_by("created_at")
                       [:ACTION_LIMIT])
        if request.POST.get("post") == "yes":
            result = replay.abandon([r.pk for r in records],
                                    free_stash=request.POST.get("free_stash") == "on")
            self.message_user(request, f"Marked {result.abandoned} save(s) abandoned; "
                              f"freed {result.stashes_freed} stash(es); "
                              f"skipped {result.skipped}.", messages.SUCCESS)
            return None
        if not records:
            self.message_user(request, "Only failed or deferred saves can be abandoned.",
                              messages.WARNING)
            return None
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": "Mark saves abandoned", "records": records,
                   "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                   "with_stash": sum(1 for r in records if r.has_stash)}
        return TemplateResponse(
            request, "admin/storage_guard/saveattempt/abandon_confirmation.html", context)

    # ------------------------------------------------------------ views
    def get_urls(self):
        own = [
            path("summary/", self.admin_site.admin_view(self.summary_view),
                 name="storage_guard_saveattempt_summary"),
            path("<int:object_id>/stash/", self.admin_site.admin_view(self.stash_view),
                 name="storage_guard_saveattempt_stash"),
        ]
        return own + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "sg_dates": self.date_links(request),
                         "summary_url": reverse("admin:storage_guard_saveattempt_summary")}
        return super().changelist_view(request, extra_context)

    def stash_view(self, request, object_id: int):
        if not self.has_operate_permission(request):
            raise PermissionDenied
        record = get_object_or_404(SaveAttempt, pk=object_id)
        if not record.has_stash:
            raise Http404("this save has no stashed bytes")
        filename = posixpath.basename(record.name) or f"save-{record.pk}"
        content_type = record.content_type or "application/octet-stream"
        if record.stash_backend == StashBackend.STORAGE:
            alias, name = record.stash_location.split(":", 1)
            return FileResponse(storages[alias].open(name, "rb"), as_attachment=True,
                                filename=filename, content_type=content_type)
        response = HttpResponse(stash.read(record), content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    def summary_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta,
            "title": "Save attempts: summary",
            "windows": [window_stats("last 24 hours", now - timedelta(hours=24)),
                        window_stats("last 7 days", now - timedelta(days=7))],
            "newest_failures": SaveAttempt.objects.filter(status__in=UNRESOLVED)
            .order_by("-created_at")[:10],
            "changelist_url": reverse("admin:storage_guard_saveattempt_changelist"),
        }
        return TemplateResponse(request, "admin/storage_guard/saveattempt/summary.html",
                                context)

    # ------------------------------------------------------------ date hierarchy
    def date_links(self, request) -> dict:
        """Year → month → day links from MIN/MAX(created_at), not from SELECT DISTINCT."""
        field = self.date_hierarchy
        params = request.GET.copy()
        year, month = params.get(f"{field}__year"), params.get(f"{field}__month")
        bounds = SaveAttempt.objects.aggregate(first=Min(field), last=Max(field))
        if bounds["first"] is None:
            return {"links": [], "back": None}
        first, last = (timezone.localtime(bounds[b]) for b in ("first", "last"))

        def link(label, **values):
            query = params.copy()
            for part in ("year", "month", "day", "gte", "lt"):
                query.pop(f"{field}__{part}", None)
            query.pop("p", None)
            for part, value in values.items():
                query[f"{field}__{part}"] = str(value)
            return {"label": label, "query": "?" + urlencode(sorted(query.lists()), doseq=True)}

        if year and year.isdigit() and month and month.isdigit():
            days = calendar.monthrange(int(year), int(month))[1]
            return {"back": link(f"\u2039 {year}", year=year),
                    "links": [link(f"{calendar.month_abbr[int(month)]} {day}", year=year,
                                   month=month, day=day) for day in range(1, days + 1)]}
        if year and year.isdigit():
            return {"back": link("\u2039 All dates"),
                    "links": [link(f"{calendar.month_name[m]} {year}", year=year, month=m)
                              for m in range(1, 13)
                              if (int(year), m) >= (first.year, first.month)
                              and (int(year), m) <= (last.year, last.month)]}
        return {"back": None,
                "links": [link(str(y), year=y) for y in range(first.year, last.year + 1)]}


def window_stats(label: str, since) -> dict:
    """Counts for the summary page: one GROUP BY status, one GROUP BY error code."""
    qs = SaveAttempt.objects.filter(created_at__gte=since)
    by_status = dict(qs.order_by().values_list("status").annotate(n=Count("pk")))
    total = sum(by_status.values())
    retried = qs.filter(attempts__gt=1).order_by().aggregate(
        saves=Count("pk"), attempts=Sum("attempts"))
    codes = list(qs.exclude(error_code="").order_by().values("error_code")
                 .annotate(n=Count("pk")).order_by("-n", "error_code")[:12])
    biggest = max((row["n"] for row in codes), default=1)
    bars = [{"code": row["error_code"], "n": row["n"], "y": 8 + index * 26,
             "width": max(2, round(360 * row["n"] / biggest))} for index, row in enumerate(codes)]
    succeeded = by_status.get(Status.SUCCEEDED, 0)
    return {
        "label": label, "total": total, "by_status": by_status,
        "succeeded": succeeded, "recovered": by_status.get(Status.RECOVERED, 0),
        "unresolved": sum(by_status.get(s, 0) for s in UNRESOLVED),
        "success_rate": f"{100 * succeeded / total:.2f}" if total else "—",
        "delivered_rate": (f"{100 * (succeeded + by_status.get(Status.RECOVERED, 0)) / total:.2f}"
                           if total else "—"),
        "retried_saves": retried["saves"] or 0,
        "extra_attempts": (retried["attempts"] or 0) - (retried["saves"] or 0),
        "bars": bars, "chart_height": 16 + 26 * len(bars),
    }
