"""The example's pages: generate a picture, save a document or upload, switch faults on and off."""

from __future__ import annotations

import json
import uuid

from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from example_project import faults
from example_project.imaging import generate_png
from storage_guard.documents import load_document, save_document
from storage_guard.keys import date_partitioned_key, slugify_segment
from storage_guard.models import SaveAttempt
from storage_guard.recording import record_alias
from storage_guard.responses import (
    SaveOutcomeResponse,
    asave_generated,
    delivery_status,
    save_generated,
)

MAX_LABEL = 60


def _fault_context() -> dict:
    return {"presets": faults.PRESETS, "active_fault": faults.active(),
            "proxy_counts": faults.counts()}


@require_GET
def index(request):
    recent = SaveAttempt.objects.using(record_alias()).order_by("-created_at", "-pk")[:10]
    return render(request, "example/index.html", {"recent": recent, **_fault_context()})


@require_GET
def generate_page(request):
    return render(request, "example/generate.html", _fault_context())


@require_POST
async def api_generate(request):
    """Generate a PNG and save it; the JSON is a ``SaveOutcome`` (docs/responses.md)."""
    label = (request.POST.get("label") or "storage_guard").strip()[:MAX_LABEL]
    name = date_partitioned_key(
        "generated", f"{slugify_segment(label, 40)}-{uuid.uuid4().hex[:8]}.png")
    outcome = await asave_generated(generate_png(label), name, content_type="image/png")
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
    context = {"outcome": None, "document_text": '{\n  "hello": "world"\n}', "title": "notes"}
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
