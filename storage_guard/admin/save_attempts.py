"""The admin for ``SaveAttempt``: review failed saves, retry them, give up on them, see trends.

Records are evidence, so the admin is read-only: nobody adds, edits or deletes them by hand.
Users with ``storage_guard.change_saveattempt`` may run the actions ("Retry now", "Mark
abandoned") and download stashed bytes. Built to stay quick with millions of rows: no full
table count (``show_full_result_count = False``, a paginator that stops counting at
``COUNT_CAP``), no filter facets, filters whose choices need no table scan (``filters``), a date
hierarchy drawn from two index lookups instead of ``SELECT DISTINCT`` over dates (both in
``changelist``), and an attention-first default order (failed, deferred, rejected, abandoned,
then the rest, newest first) that matches the ``sg_attention_created`` expression index. The
summary page's numbers come from ``summary``. Every page shows the circuit breakers that are not
closed; times carry their zone (``storage_guard.clock``); the detail page has the actions, each
written to the admin's history (``LogEntry``). See ``docs/admin.md``.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.admin import ShowFacets
from django.core.exceptions import PermissionDenied
from django.core.files.storage import storages
from django.db.models import Q
from django.http import (
    FileResponse,
    Http404,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from storage_guard import clock
from storage_guard.admin.changelist import (  # COUNT_CAP: at its old path too
    COUNT_CAP,  # noqa: F401
    CappedCountPaginator,
    date_links,
    drop_nul_from_query,
)
from storage_guard.admin.filters import CategoryFilter, ErrorCodeFilter, StorageFilter
from storage_guard.admin.summary import window_stats
from storage_guard.models import (
    ATTENTION,
    UNRESOLVED,
    SaveAttempt,
    StashBackend,
    Status,
    key_digest,
)
from storage_guard.operations import circuits, redelivery
from storage_guard.saving import stash
from storage_guard.saving.classification import safe_response
from storage_guard.saving.safetext import preview_key, storable

ACTION_LIMIT = 100  # records one "Retry now" click replays inside a web request
KEY_CHARS = 48
BADGE_COLOURS = {
    Status.SUCCEEDED: "#2e7d32", Status.RECOVERED: "#1565c0", Status.DEFERRED: "#ef6c00",
    Status.FAILED: "#c62828", Status.REJECTED: "#6a1b9a", Status.ABANDONED: "#616161",
    Status.CANCELLED: "#455a64",
}
HEX = set("0123456789abcdef")
# A content type the stash download may repeat: type/subtype tokens and simple parameters.
PLAIN_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+"
                                r"(; ?[A-Za-z0-9_-]+=[A-Za-z0-9_.-]+)*")


def human_size(size: int | None) -> str:
    """Django's ``filesizeformat`` (translated, non-breaking space), "—" when unknown."""
    return "—" if size is None else filesizeformat(size)


# --------------------------------------------------------------------- the admin
@admin.register(SaveAttempt)
class SaveAttemptAdmin(admin.ModelAdmin):
    list_display = ("status_badge", "short_key", "error_code", "attempts", "size_display",
                    "created_display")
    list_display_links = ("short_key",)
    list_filter = ("status", ErrorCodeFilter, CategoryFilter, StorageFilter,
                   ("created_at", admin.DateFieldListFilter))
    search_fields = ("key",)
    search_help_text = gettext_lazy("Exact key, SHA-256 or request id (indexed); anything else "
                                    "searches keys by substring, which reads the whole table.")
    date_hierarchy = "created_at"
    ordering = (ATTENTION.asc(), "-created_at")
    list_per_page = 50
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    actions = ("retry_now", "mark_abandoned")
    change_list_template = "admin/storage_guard/saveattempt/change_list.html"
    change_form_template = "admin/storage_guard/saveattempt/change_form.html"
    fieldsets = (
        (gettext_lazy("Save"), {"fields": (
            "status_badge", "full_key", "storage_alias", "bucket", "name", "key_bytes",
            "size_display", "content_type", "sha256", "created_display", "updated_display",
            "recovered_display", "next_retry_display")}),
        (gettext_lazy("Last error"), {"fields": (
            "error_code", "error_category", "transient", "error_message", "request_id",
            "host_id", "error_response_pretty")}),
        (gettext_lazy("Attempts"), {"fields": ("attempts", "duration_display",
                                               "attempt_table")}),
        (gettext_lazy("Stashed bytes"), {"fields": ("stash_link",)}),
        (gettext_lazy("Retry history of this key"), {"fields": ("key_history",)}),
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
    @admin.display(description=gettext_lazy("status"), ordering=ATTENTION)
    def status_badge(self, obj):
        colour = BADGE_COLOURS.get(obj.status, "#424242")
        return format_html('<span class="sg-badge sg-{}" style="background:{};color:#fff;'
                           'padding:2px 8px;border-radius:10px;font-size:11px;'
                           'white-space:nowrap">{}</span>', obj.status, colour,
                           obj.get_status_display())

    @admin.display(description=gettext_lazy("key"))
    def short_key(self, obj):
        short = preview_key(obj.key, KEY_CHARS)
        return format_html('<span class="sg-key" title="{}">{}</span>', obj.key, short)

    @admin.display(description=gettext_lazy("size"), ordering="size")
    def size_display(self, obj):
        return human_size(obj.size)

    @admin.display(description=gettext_lazy("duration"), ordering="duration_ms")
    def duration_display(self, obj):
        return f"{obj.duration_ms / 1000:.2f} s" if obj.duration_ms >= 1000 \
            else f"{obj.duration_ms:.0f} ms"

    @admin.display(description=gettext_lazy("created"), ordering="created_at")
    def created_display(self, obj):
        moment = obj.created_at  # date above time: the column stays narrow at 1280 px
        return format_html('<span class="sg-when" title="{}">{}<br>{}</span>',
                           clock.when(moment), clock.when(moment, "Y-m-d"),
                           clock.when(moment, clock.TIME_FORMAT))

    @admin.display(description=gettext_lazy("updated"))
    def updated_display(self, obj):
        return clock.when(obj.updated_at) or "—"

    @admin.display(description=gettext_lazy("recovered at"))
    def recovered_display(self, obj):
        return clock.when(obj.recovered_at) or "—"

    @admin.display(description=gettext_lazy("next retry at"))
    def next_retry_display(self, obj):
        return clock.when(obj.next_retry_at) or "—"

    # ------------------------------------------------------------ detail
    @admin.display(description=gettext_lazy("full key"))
    def full_key(self, obj):
        return format_html('<code style="word-break:break-all">{}</code>', obj.key)

    @admin.display(description=gettext_lazy("error response"))
    def error_response_pretty(self, obj):
        if not obj.error_response:
            return "—"
        # safe_response again: rows written before responses were scrubbed kept signatures.
        return format_html("<pre>{}</pre>", json.dumps(safe_response(obj.error_response),
                                                         indent=2, sort_keys=True, default=str))

    @admin.display(description=gettext_lazy("every attempt"))
    def attempt_table(self, obj):
        return render_to_string("storage_guard/attempt_table.html",
                                {"attempts": obj.attempt_log or []})

    @admin.display(description=gettext_lazy("stash"))
    def stash_link(self, obj):
        if not obj.has_stash:
            return _("no stashed bytes (delivered, freed, or never stashed)")
        url = reverse("admin:storage_guard_saveattempt_stash", args=[obj.pk])
        where = (_("database") if obj.stash_backend == StashBackend.DATABASE
                 else obj.stash_location)
        return format_html('<a href="{}" class="sg-download">{}</a> ({}, {})', url,
                           _("Download the stashed bytes"), human_size(obj.size), where)

    @admin.display(description=gettext_lazy("other records with this key"))
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
    @admin.action(description=gettext_lazy("Retry now"), permissions=["operate"])
    def retry_now(self, request, queryset):
        ids = list(queryset.order_by("created_at").values_list("pk", flat=True)[:ACTION_LIMIT + 1])
        if len(ids) > ACTION_LIMIT:
            self.message_user(request, _("Select at most %(limit)d records to retry from the "
                                         "admin; use `manage.py retry_failed_saves` for more.")
                              % {"limit": ACTION_LIMIT}, messages.ERROR)
            return None
        self.retry_records(request, ids)
        return None

    def retry_records(self, request, ids: list[int]) -> redelivery.ReplayResult:
        """Replay ``ids``, tell the user how each went and write it to the admin's history."""
        result = redelivery.replay_ids(ids, via="admin")
        level = messages.SUCCESS if result.ok else messages.WARNING
        self.message_user(request, _("Retry: %(summary)s.") % {"summary": result.summary()},
                          level)
        records = SaveAttempt.objects.in_bulk([item.record_id for item in result.items])
        for item in result.items:
            line = item_line(item)
            if item.outcome != redelivery.DELIVERED:
                self.message_user(request, line, messages.WARNING
                                  if item.outcome == redelivery.FAILED else messages.INFO)
            if item.record_id in records:
                self.log_change(request, records[item.record_id],
                                _("Retry now: %(line)s") % {"line": line})
        return result

    @admin.action(description=gettext_lazy("Mark abandoned"), permissions=["operate"])
    def mark_abandoned(self, request, queryset):
        records = list(queryset.filter(status__in=UNRESOLVED).order_by("created_at")
                       [:ACTION_LIMIT])
        if request.POST.get("post") == "yes":
            self.abandon_records(request, records)
            return None
        if not records:
            self.message_user(request, _("Only failed or deferred saves can be abandoned."),
                              messages.WARNING)
            return None
        return self.abandon_confirmation(request, records)

    def abandon_records(self, request, records: list[SaveAttempt]) -> None:
        free = request.POST.get("free_stash") == "on"
        ids = [r.pk for r in records]
        result = redelivery.abandon(ids, free_stash=free)
        self.message_user(request, _("Marked %(abandoned)d save(s) abandoned; freed "
                                     "%(freed)d stash(es); skipped %(skipped)d.") % {
            "abandoned": result.abandoned, "freed": result.stashes_freed,
            "skipped": result.skipped}, messages.SUCCESS)
        note = (_("Mark abandoned: abandoned, stashed bytes deleted") if free
                else _("Mark abandoned: abandoned, stashed bytes kept"))
        for record in SaveAttempt.objects.filter(pk__in=ids, status=Status.ABANDONED):
            self.log_change(request, record, note)

    def abandon_confirmation(self, request, records, form_action: str = "", back_url: str = ""):
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": _("Mark saves abandoned"), "records": records,
                   "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                   "with_stash": sum(1 for r in records if r.has_stash),
                   "form_action": form_action, "back_url": back_url}
        return TemplateResponse(
            request, "admin/storage_guard/saveattempt/abandon_confirmation.html", context)

    # ------------------------------------------------------------ views
    def get_urls(self):
        own = [
            path("summary/", self.admin_site.admin_view(self.summary_view),
                 name="storage_guard_saveattempt_summary"),
            path("<int:object_id>/stash/", self.admin_site.admin_view(self.stash_view),
                 name="storage_guard_saveattempt_stash"),
            path("<int:object_id>/retry/", self.admin_site.admin_view(self.retry_view),
                 name="storage_guard_saveattempt_retry"),
            path("<int:object_id>/abandon/", self.admin_site.admin_view(self.abandon_view),
                 name="storage_guard_saveattempt_abandon"),
        ]
        return own + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        drop_nul_from_query(request)
        extra_context = {**(extra_context or {}), "sg_dates": self.date_links(request),
                         "summary_url": reverse("admin:storage_guard_saveattempt_summary"),
                         "sg_circuits": circuit_lines()}
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        record = SaveAttempt.objects.filter(pk=object_id).first() if object_id.isdigit() else None
        extra_context = {**(extra_context or {}), "sg_circuits": circuit_lines(),
                         "sg_can_operate": self.has_operate_permission(request),
                         "sg_record": record}
        return super().change_view(request, object_id, form_url, extra_context)

    def retry_view(self, request, object_id: int):
        """"Retry now" on the detail page: POST only, back to the detail page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_operate_permission(request):
            raise PermissionDenied
        record = get_object_or_404(SaveAttempt, pk=object_id)
        self.retry_records(request, [record.pk])
        return HttpResponseRedirect(change_url(record.pk))

    def abandon_view(self, request, object_id: int):
        """"Mark abandoned" on the detail page: asks first (GET), abandons on POST."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        record = get_object_or_404(SaveAttempt, pk=object_id)
        if not record.is_unresolved:
            self.message_user(request, _("Only failed or deferred saves can be abandoned."),
                              messages.WARNING)
            return HttpResponseRedirect(change_url(record.pk))
        if request.method == "POST" and request.POST.get("post") == "yes":
            self.abandon_records(request, [record])
            return HttpResponseRedirect(change_url(record.pk))
        return self.abandon_confirmation(request, [record], form_action=request.path,
                                         back_url=change_url(record.pk))

    def stash_view(self, request, object_id: int):
        if not self.has_operate_permission(request):
            raise PermissionDenied
        record = get_object_or_404(SaveAttempt, pk=object_id)
        if not record.has_stash:
            raise Http404("this save has no stashed bytes")
        # Django builds Content-Disposition (quoting, RFC 5987 for anything else); the content
        # type is the record's only when it is a plain MIME type.
        filename = storable(posixpath.basename(record.name)) or f"save-{record.pk}"
        content_type = record.content_type if PLAIN_CONTENT_TYPE.fullmatch(
            record.content_type or "") else "application/octet-stream"
        if record.stash_backend == StashBackend.STORAGE:
            alias, name = record.stash_location.split(":", 1)
            body = storages[alias].open(name, "rb")
        else:
            body = io.BytesIO(stash.read(record))
        return FileResponse(body, as_attachment=True, filename=filename,
                            content_type=content_type)

    def summary_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta,
            "title": _("Save attempts: summary"),
            "windows": [window_stats(_("last 24 hours"), now - timedelta(hours=24), now),
                        window_stats(_("last 7 days"), now - timedelta(days=7), now)],
            "newest_failures": SaveAttempt.objects.filter(status__in=UNRESOLVED)
            .order_by("-created_at")[:10],
            "changelist_url": reverse("admin:storage_guard_saveattempt_changelist"),
            "sg_circuits": circuit_lines(),
        }
        return TemplateResponse(request, "admin/storage_guard/saveattempt/summary.html",
                                context)

    # ------------------------------------------------------------ date hierarchy
    def date_links(self, request) -> dict:
        return date_links(request, self.date_hierarchy)


def circuit_lines() -> list[str]:
    """The banner: one sentence per circuit that is open, half-open or unreadable."""
    return [circuits.describe(snap) for snap in circuits.troubled()]


def change_url(record_id: int) -> str:
    return reverse("admin:storage_guard_saveattempt_change", args=[record_id])


def item_line(item: redelivery.ItemResult) -> str:
    """One replayed record as the replay reported it: delivered, failed again, or skipped."""
    if item.outcome == redelivery.DELIVERED:
        return _("#%(id)d delivered") % {"id": item.record_id}
    if item.outcome == redelivery.FAILED:
        return _("#%(id)d failed again: %(code)s") % {"id": item.record_id, "code": item.code}
    return _("#%(id)d skipped: %(reason)s") % {"id": item.record_id, "reason": item.reason}
