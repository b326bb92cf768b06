"""``StorageGuardIntegration``: storage_guard as a sentry_sdk integration.

Imported only through ``integrations.sentry.StorageGuardIntegration`` (which imports sentry_sdk
on first use), so a project without sentry_sdk never imports it::

    import sentry_sdk
    from storage_guard.integrations.sentry import StorageGuardIntegration

    sentry_sdk.init(dsn=..., integrations=[StorageGuardIntegration()])

``setup_once`` excludes every ``storage_guard`` logger (``storage_guard`` and ``storage_guard.*``)
from sentry's logging integration, events and Sentry Logs alike, and adds the global event
processor ``scrub_event`` and storage_guard's own wiring (``integrations.sentry.setup``).
"""

from __future__ import annotations

from sentry_sdk.integrations import Integration

from storage_guard.integrations import sentry

__all__ = ["StorageGuardIntegration"]


class StorageGuardIntegration(Integration):
    """Keeps storage_guard's log lines and payload-holding frame locals out of Sentry."""

    identifier = "storage_guard"

    @staticmethod
    def setup_once() -> None:
        sentry.setup(force=True)
