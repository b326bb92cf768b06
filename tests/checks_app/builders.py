"""Model builders for the checks tests. Call them inside ``isolate_apps("tests.checks_app")``."""

from __future__ import annotations

from django.db import models

APP_LABEL = "checks_app"


def guarded_storage(**options):
    """A ``GuardedS3Storage`` that is never asked to send anything."""
    from storage_guard.storage import GuardedS3Storage

    return GuardedS3Storage(bucket_name="checks", **options)


def model(name: str, **fields) -> type[models.Model]:
    """A model class called ``name`` in the checks app with the given fields."""
    attrs = {"__module__": __name__, "Meta": type("Meta", (), {"app_label": APP_LABEL}), **fields}
    return type(name, (models.Model,), attrs)


def file_model(name: str = "Upload", *, field_class=models.FileField, storage=None,
               **field_options) -> type[models.Model]:
    """A model with one file field on a guarded storage (by default)."""
    storage = guarded_storage() if storage is None else storage
    return model(name, file=field_class(storage=storage, **field_options))
