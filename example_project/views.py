"""The example's pages: generate a picture, save a document or upload, switch faults on and off."""

from __future__ import annotations

import json
import uuid

from asgiref.sync import sync_to_async
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from example_project import faults
from example_project.imaging import generate_png
from storage_guard.contrib.generated.documents import load_document, save_document
from storage_guard.contrib.generated.responses import (
    DELIVERED,
    SaveOutcomeResponse,
    asave_generated,
    delivery_status,
    save_generated,
)
from storage_guard.keys import date_partitioned_key, slugify_segment
from storage_guard.models import SaveAttempt
from storage_guard.saving import stash
from storage_guard.saving.records import record_alias

MAX_LABEL = 60
OWN_SAVES = "example_own_saves"  # session key: the attempt ids this visitor's saves created
MAX_OWN_SAVES = 50


def _fault_context() -> dict:
    return {"presets": faults.PRESETS, "active_fault": faults.active(),
            "proxy_counts": faults.counts()}


@require_GET
def index(request):
    recent = SaveAttempt.objects.using(record_alias()).order_by("-created_at", "-pk")[:10]
    return render(request, "example/index.html", {"recent": recent, **_fault_context()})


@require_GET
def generate_page(request):
    """The form; with ``?attempt=N`` (after a reload) also that save's state as it is now."""
    return render(request, "example/generate.html",
                  {"initial": _own_save(request, request.GET.get("attempt")),
                   **_fault_context()})


def _own_save(request, attempt_id) -> dict | None:
    """The current state of one of this visitor's saves, for the server-rendered result."""
    if not str(attempt_id or "").isdigit() or int(attempt_id) not in _own_ids(request):
        return None
    record = SaveAttempt.objects.using(record_alias()).filter(pk=int(attempt_id)).first()
    if record is None:
        return None
    delivered = record.status in DELIVERED
    content_url = reverse("saved-content", args=[record.pk])  # the stash while pending
    return {"record": record, "delivered": delivered,
            "kept": record.is_unresolved and record.has_stash,
            "content_url": default_storage.url(record.name) if delivered else content_url,
            "download_url": content_url + "?download=1",
            "filename": record.name.rsplit("/", 1)[-1]}


def _own_ids(request) -> list[int]:
    return request.session.get(OWN_SAVES, [])


def _remember(request, attempt_id: int | None) -> None:
    if attempt_id is not None:
        request.session[OWN_SAVES] = [*_own_ids(request), attempt_id][-MAX_OWN_SAVES:]


@require_GET
def saved_content(request, attempt_id: int):
    """The bytes of one of this visitor's saves: from the stash while a retry is pending, from
    S3 (a redirect to its URL) once delivered. Other visitors' saves are not found."""
    if attempt_id not in _own_ids(request):
        raise Http404("not one of your saves")
    record = SaveAttempt.objects.using(record_alias()).filter(pk=attempt_id).first()
    if record is None:
        raise Http404("no such save")
    if record.status in DELIVERED:
        return HttpResponseRedirect(default_storage.url(record.name))
    if not record.has_stash:
        raise Http404("this save was not delivered and its bytes are no longer kept")
    return FileResponse(stash.open_file(record), content_type=record.content_type or None,
                        as_attachment="download" in request.GET,
                        filename=record.name.rsplit("/", 1)[-1])


@require_POST
async def api_generate(request):
    """Generate a PNG and save it; the JSON is a ``SaveOutcome`` (docs/responses.md)."""
    label = (request.POST.get("label") or "storage_guard").strip()[:MAX_LABEL]
    name = date_partitioned_key(
        "generated", f"{slugify_segment(label, 40)}-{uuid.uuid4().hex[:8]}.png")
    outcome = await asave_generated(generate_png(label), name, content_type="image/png")
    await sync_to_async(_remember)(request, outcome.attempt_id)
    return SaveOutcomeResponse(outcome)


@require_GET
def api_save_status(request, token: str):
    """Poll a save by the ``status_token`` its outcome carried: a capability, not an id, so
    nobody can walk the ids and download what others saved."""
    status = delivery_status(token)
    if status is None:
        raise Http404("no save for this token (unknown, expired or forged)")
    return JsonResponse(status, headers={"Cache-Control": "no-store"})


def documents_page(request):
    context = {"outcome": None, "document_text": '{\n  "hello": "world"\n}', "title": "notes",
               **_fault_context()}
    if request.method == "POST":
        context.update(_save_posted(request))
    return render(request, "example/documents.html", context)


def _save_posted(request) -> dict:
    upload = request.FILES.get("file")
    if upload is not None:
        name = date_partitioned_key("uploads", upload.name)
        return {"outcome": save_generated(upload.read(), name, content_type=upload.content_type)}
    title = (request.POST.get("title") or "").strip() or "document"
    text = request.POST.get("document", "")
    try:
        document = json.loads(text)
    except ValueError as exc:
        return {"error": f"That is not valid JSON: {exc}", "document_text": text, "title": title}
    outcome = save_document(document, title)
    read_back = load_document(outcome.name) if outcome.saved else None
    return {"outcome": outcome, "read_back": json.dumps(read_back, indent=2, ensure_ascii=False),
            "document_text": text, "title": title}


def faults_page(request):
    if request.method == "POST":
        try:
            faults.apply(request.POST.get("preset", ""))
        except (ValueError, faults.NoProxy) as exc:
            return render(request, "example/faults.html",
                          {"error": str(exc), **_fault_context()}, status=400)
        target = request.POST.get("next") or reverse("faults")
        if not url_has_allowed_host_and_scheme(target, {request.get_host()}):
            target = reverse("faults")
        return HttpResponseRedirect(target)
    return render(request, "example/faults.html", _fault_context())
