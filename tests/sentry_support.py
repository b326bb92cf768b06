"""The real sentry_sdk, initialised with a transport that keeps events in memory.

Import the fixture into a test module with::

    from tests.sentry_support import sentry_events  # noqa: F401

``sentry_events`` is the list of error events that would have been sent, as dicts, after every
integration, event processor and ``before_send`` ran, in order. The SDK runs with its default
integrations (logging and dedupe included) inside a fresh isolation scope, as a request would
under the Django integration, and is switched off again afterwards.
"""

from __future__ import annotations

import contextlib

import pytest
import sentry_sdk
from sentry_sdk.transport import Transport

FAKE_DSN = "http://public@127.0.0.1:9/1"  # never contacted: the transport below sends nothing


class MemoryTransport(Transport):
    """Keeps each envelope's event in ``events`` instead of sending it."""

    def __init__(self, events: list, options=None):
        super().__init__(options)
        self.events = events
        self.envelopes = []

    def capture_envelope(self, envelope) -> None:
        self.envelopes.append(envelope)
        event = envelope.get_event()
        if event is not None:
            self.events.append(event)


@contextlib.contextmanager
def memory_sentry(**options):
    """The SDK initialised with ``options`` and a ``MemoryTransport``, which is yielded."""
    from storage_guard.integrations import sentry

    transport = MemoryTransport([])
    sentry_sdk.init(dsn=FAKE_DSN, transport=transport, auto_enabling_integrations=False,
                    max_breadcrumbs=100, **options)
    sentry.reset_throttle()
    try:
        with sentry_sdk.isolation_scope():
            yield transport
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
        sentry.reset_throttle()


@pytest.fixture
def sentry_events():
    with memory_sentry() as transport:
        yield transport.events
