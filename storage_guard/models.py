"""One row per logical save (successes included), and the bytes of saves that did not arrive."""

from __future__ import annotations

import hashlib

from django.db import models
from django.utils.translation import gettext_lazy as _


class Status(models.TextChoices):
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    DEFERRED = "deferred", _("deferred")
    RECOVERED = "recovered", _("recovered")
    REJECTED = "rejected", _("rejected")
    ABANDONED = "abandoned", _("abandoned")
    CANCELLED = "cancelled", _("cancelled")


UNRESOLVED = (Status.FAILED, Status.DEFERRED)
# Attention-first order for operators (failed, deferred, rejected, abandoned, then the rest),
# as an expression with its own index (``sg_attention_created``) so the admin's first page is
# an index scan however many rows there are.
ATTENTION_RANKS = (Status.FAILED, Status.DEFERRED, Status.REJECTED, Status.ABANDONED)
ATTENTION = models.Case(
    *(models.When(status=status.value, then=models.Value(rank))
      for rank, status in enumerate(ATTENTION_RANKS)),
    default=models.Value(len(ATTENTION_RANKS)), output_field=models.IntegerField())


class StashBackend(models.TextChoices):
    NONE = "", _("none")
    DATABASE = "db", _("database")
    STORAGE = "storage", _("stash storage")


def key_digest(key: str) -> str:
    """Indexable stand-in for a key that may be longer than a B-tree entry allows."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class SaveAttemptQuerySet(models.QuerySet):
    def unresolved(self):
        return self.filter(status__in=UNRESOLVED)

    def for_key(self, key: str):
        return self.filter(key_digest=key_digest(key))


class SaveAttempt(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    storage_alias = models.CharField(max_length=100, blank=True)
    bucket = models.CharField(max_length=255, blank=True)
    operation = models.CharField(max_length=16, default="save")
    name = models.TextField(help_text=_("Name as the storage knows it (without location)."))
    key = models.TextField(help_text=_("Full object key, location prefix included."))
    key_digest = models.CharField(max_length=64, editable=False)
    key_bytes = models.PositiveIntegerField(help_text=_("Length of the key in UTF-8 bytes."))
    size = models.BigIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)  # indexed: sg_sha256
    status = models.CharField(max_length=16, choices=Status.choices)
    attempts = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error_category = models.CharField(max_length=32, blank=True)
    transient = models.BooleanField(null=True)
    error_message = models.TextField(blank=True)
    error_response = models.JSONField(null=True, blank=True)
    attempt_log = models.JSONField(default=list, blank=True)
    request_id = models.CharField(max_length=128, blank=True)  # indexed: sg_request_id
    host_id = models.CharField(max_length=256, blank=True)
    duration_ms = models.FloatField(default=0)
    write_params = models.JSONField(default=dict, blank=True)
    stash_backend = models.CharField(max_length=16, choices=StashBackend.choices, blank=True)
    stash_location = models.TextField(blank=True)
    recovered_at = models.DateTimeField(null=True, blank=True)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    storage_spec = models.JSONField(
        null=True, blank=True,
        help_text=_("How to rebuild a storage that is not in settings.STORAGES (class and "
                    "options, never credentials); empty for storages with an alias."))

    objects = SaveAttemptQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at",)
        verbose_name = _("save attempt")
        verbose_name_plural = _("save attempts")
        indexes = [
            models.Index(fields=["status", "-created_at"], name="sg_status_created"),
            models.Index(fields=["key_digest", "created_at"], name="sg_key_created"),
            models.Index(fields=["created_at"], name="sg_created"),
            models.Index(fields=["error_code", "created_at"], name="sg_code_created"),
            models.Index(ATTENTION, models.F("created_at").desc(), models.F("id").desc(),
                         name="sg_attention_created"),
            # Exact lookups only (admin search, report, spool): a Meta index, because a
            # db_index CharField also gets a varchar_pattern_ops "_like" index on PostgreSQL,
            # which no query uses and every record INSERT has to update (migration 0003).
            models.Index(fields=["sha256"], name="sg_sha256"),
            models.Index(fields=["request_id"], name="sg_request_id"),
        ]

    def __str__(self) -> str:
        return f"{self.status} {self.key[:80]}"

    def save(self, *args, **kwargs):
        self.key_digest = key_digest(self.key)
        super().save(*args, **kwargs)

    @property
    def is_unresolved(self) -> bool:
        return self.status in UNRESOLVED

    @property
    def has_stash(self) -> bool:
        return bool(self.stash_backend)


class StashedPayload(models.Model):
    """Bytes of a save that did not reach S3, kept in the database (small payloads)."""

    attempt = models.OneToOneField(SaveAttempt, on_delete=models.CASCADE, primary_key=True,
                                   related_name="stashed_payload")
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("stashed payload")
        verbose_name_plural = _("stashed payloads")

    def __str__(self) -> str:
        return f"stash for {self.attempt_id}"
