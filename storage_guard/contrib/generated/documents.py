"""JSON documents stored gzip-compressed under a date-partitioned key, through the guarded path.

``save_document({"a": 1}, "report")`` stores ``documents/year=2025/month=03/day=14/report.json.gz``
with ``Content-Type: application/json`` and ``Content-Encoding: gzip`` (django-storages derives
both from the ``.json.gz`` name) and returns the same ``SaveOutcome`` as ``save_generated``: a
document that did not reach S3 is stashed and handed back like any generated content.
``load_document(name)`` reads it back through the storage (a deferred save from its stash).
"""

from __future__ import annotations

import gzip
import json

from django.core.files.storage import default_storage
from django.core.serializers.json import DjangoJSONEncoder

from storage_guard import conf
from storage_guard.contrib.generated.responses import SaveOutcome, save_generated
from storage_guard.keys import date_partitioned_key, slugify_segment

__all__ = ["CONTENT_TYPE", "SUFFIX", "document_name", "encode_document", "load_document",
           "save_document"]

CONTENT_TYPE = "application/json"
SUFFIX = ".json.gz"
GZIP_MAGIC = b"\x1f\x8b"


def document_name(title: str, *, prefix: str | None = None, when=None) -> str:
    """``<prefix>/year=YYYY/month=MM/day=DD/<slug>.json.gz`` for a document called ``title``."""
    prefix = conf.get("DOCUMENT_PREFIX") if prefix is None else prefix
    return date_partitioned_key(prefix, f"{slugify_segment(title)}{SUFFIX}", when)


def encode_document(document) -> bytes:
    """Compact UTF-8 JSON, gzip-compressed with a fixed mtime (equal documents, equal bytes)."""
    try:
        text = json.dumps(document, cls=DjangoJSONEncoder, ensure_ascii=False,
                          separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"document is not JSON-serialisable: {exc}") from exc
    return gzip.compress(text.encode("utf-8"), mtime=0)


def save_document(document, title: str, *, storage=None, prefix: str | None = None,
                  when=None) -> SaveOutcome:
    """Store ``document`` (anything JSON-serialisable) as gzip JSON; see ``save_generated``."""
    return save_generated(encode_document(document), document_name(title, prefix=prefix,
                                                                   when=when),
                          storage=storage, content_type=CONTENT_TYPE)


def load_document(name: str, *, storage=None):
    """The document saved as ``name``, decoded (``FileNotFoundError`` if there is none)."""
    storage = storage or default_storage
    with storage.open(name, "rb") as handle:
        data = handle.read()
    if data[:2] == GZIP_MAGIC:  # a transparent-decompressing proxy may have unzipped it
        data = gzip.decompress(data)
    return json.loads(data.decode("utf-8"))
