"""Every use of sentry_sdk in storage_guard, and nothing else.

sentry_sdk is never imported here: each function looks it up in ``sys.modules`` and does
nothing unless the project imported it and initialised a client. Without sentry_sdk installed,
or installed but not initialised, storage_guard pays one dictionary lookup per failure and no
import cost. On a first-try success nothing in this module is called at all.

What storage_guard sends (``docs/observability.md`` has the full list):

* a breadcrumb for each retry, each retried success and each failure to write a record, on
  the current isolation scope (one per request under the Django integration);
* one event per final failure of a save or a redelivery, per refused save, captured in a
  *forked* scope so its tags, context and fingerprint never reach the next event;
* at most one message a minute per exception type when a ``SaveAttempt`` row cannot be written.

Because those events are richer than what sentry's logging integration would make of our log
lines, every storage_guard logger (``storage_guard`` and ``storage_guard.*``) is excluded from
that integration (``ignore_logger``) the first time Sentry is found active, or at once by
``StorageGuardIntegration`` (``sentry_sdk.init(integrations=[StorageGuardIntegration()])``).
An exception that storage_guard already reported (the ``SaveFailed`` raised from it, or a
``SaveRejected``) is not reported a second time when it propagates to Django's handler.

And no event carries a payload: in any event, an exception whose stack passes through a
storage_guard frame loses the local variables of every frame of that stack (``scrub_event``).
They hold the bytes being saved, the request and its signature.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from storage_guard.log import LOGGER_NAME

LOGGER_PATTERNS = (LOGGER_NAME, f"{LOGGER_NAME}.*")  # fnmatch patterns, as sentry matches them
PACKAGE = "storage_guard"
CONTEXT_NAME = "storage_guard"
BREADCRUMB_CATEGORY = "storage_guard"
REPORTED_ATTR = "_storage_guard_event_id"
MESSAGE_INTERVAL = 60.0  # seconds between two captured messages of the same kind

_install_lock = threading.Lock()
_installed = False
_last_message: dict[str, float] = {}


def __getattr__(name: str):
    """``StorageGuardIntegration`` imports sentry_sdk, so only when it is asked for."""
    if name == "StorageGuardIntegration":
        from storage_guard.integrations.sentry_integration import StorageGuardIntegration

        return StorageGuardIntegration
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def setup(force: bool = False) -> None:
    """Wire storage_guard into an already imported sentry_sdk; a no-op without it."""
    sdk = sys.modules.get("sentry_sdk")
    if sdk is not None:
        _install(sdk, force=force)


def installed() -> bool:
    return _installed


def active():
    """The sentry_sdk module when it is imported and initialised, else None."""
    sdk = sys.modules.get("sentry_sdk")
    if sdk is None:
        return None
    try:
        if not sdk.get_client().is_active():
            return None
    except Exception:  # noqa: BLE001 - a broken SDK must never break a save
        return None
    if not _installed:
        _install(sdk)
    return sdk


def _install(sdk, force: bool = False) -> None:
    global _installed
    with _install_lock:
        if _installed and not force:
            return
        from sentry_sdk.integrations.logging import ignore_logger, ignore_logger_for_sentry_logs
        from sentry_sdk.scope import add_global_event_processor

        for pattern in LOGGER_PATTERNS:
            ignore_logger(pattern)
            ignore_logger_for_sentry_logs(pattern)
        if not _installed:  # global processors are kept for the life of the process
            add_global_event_processor(_drop_already_reported)
            add_global_event_processor(scrub_event)
        _installed = True


def breadcrumb(message: str, data: dict, level: str = "info") -> None:
    sdk = active()
    if sdk is None:
        return
    try:
        sdk.add_breadcrumb(category=BREADCRUMB_CATEGORY, message=message, level=level,
                           data=data)
    except Exception:  # noqa: BLE001
        return


def capture_failure(error: BaseException, *, tags: dict, context: dict,
                    fingerprint: list[str], level: str = "error",
                    scrub: Callable[[str], str] = str) -> str | None:
    """Capture ``error`` once, with our tags, context and fingerprint on a forked scope.

    The event keeps the stack but not the frames' local variables (they hold the payload, the
    request and its signature), and ``scrub`` is applied to each exception message.
    """
    sdk = active()
    if sdk is None:
        return None
    if getattr(error, REPORTED_ATTR, None):
        return getattr(error, REPORTED_ATTR)
    try:
        with sdk.new_scope() as scope:
            _decorate(scope, tags, context, fingerprint, level)
            scope.add_event_processor(_scrubber(scrub))
            event_id = sdk.capture_exception(error)
    except Exception:  # noqa: BLE001
        return None
    _mark_reported(error, event_id)
    return event_id


def capture_message_throttled(kind: str, message: str, *, tags: dict, context: dict,
                              fingerprint: list[str], level: str = "error") -> str | None:
    """Capture ``message`` unless one of the same ``kind`` went out in the last minute."""
    sdk = active()
    if sdk is None:
        return None
    now = time.monotonic()
    last = _last_message.get(kind)
    if last is not None and now - last < MESSAGE_INTERVAL:
        return None
    _last_message[kind] = now
    try:
        with sdk.new_scope() as scope:
            _decorate(scope, tags, context, fingerprint, level)
            return sdk.capture_message(message, level=level)
    except Exception:  # noqa: BLE001
        return None


def reset_throttle() -> None:
    """Forget when messages were last captured (tests)."""
    _last_message.clear()


def _decorate(scope, tags: dict, context: dict, fingerprint: list[str], level: str) -> None:
    for name, value in tags.items():
        scope.set_tag(name, value)
    scope.set_context(CONTEXT_NAME, context)
    scope.fingerprint = fingerprint
    scope.set_level(level)


def _scrubber(scrub: Callable[[str], str]):
    def scrub_event(event, hint):
        for value in (event.get("exception") or {}).get("values") or []:
            if isinstance(value.get("value"), str):
                value["value"] = scrub(value["value"])
            for frame in (value.get("stacktrace") or {}).get("frames") or []:
                frame.pop("vars", None)
        return event

    return scrub_event


def scrub_event(event, hint):
    """Global event processor: no frame locals in a stack that passes through storage_guard.

    Every exception value (chained ones included) and thread stack is checked on its own: one
    with a storage_guard frame loses the ``vars`` of all its frames, the caller's too, since a
    view that saves bytes holds them in its locals as well.
    """
    stacks = [value.get("stacktrace") for value in (event.get("exception") or {}).get("values")
              or []]
    stacks += [thread.get("stacktrace") for thread in (event.get("threads") or {}).get("values")
               or []]
    for stack in stacks:
        frames = (stack or {}).get("frames") or []
        if any(_ours(frame) for frame in frames):
            for frame in frames:
                frame.pop("vars", None)
    return event


def _ours(frame: dict) -> bool:
    module = frame.get("module") or ""
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _mark_reported(error: BaseException, event_id: str | None) -> None:
    if not event_id:
        return
    try:
        setattr(error, REPORTED_ATTR, event_id)
    except (AttributeError, TypeError):  # an exception type without __dict__
        pass


def _drop_already_reported(event, hint):
    """Global event processor: drop an event for an exception storage_guard already sent.

    Matches the exception itself (a ``SaveRejected``) or its cause (the ``SaveFailed`` raised
    ``from`` the error that was captured), so an unhandled ``SaveFailed`` makes no second event.
    """
    exc_info = (hint or {}).get("exc_info")
    error = exc_info[1] if exc_info else None
    if error is None:
        return event
    if getattr(error, REPORTED_ATTR, None) or getattr(error.__cause__, REPORTED_ATTR, None):
        return None
    return event
