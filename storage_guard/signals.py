"""Signals storage_guard sends. Receivers run inside the save, so they must be quick; an
exception in one is caught (``send_robust``) and never reaches the save.

``save_finished``: a save or a redelivery of a stashed save has ended. ``sender`` is
``SaveTrace``; keyword arguments: ``trace`` (the operation's ``SaveTrace``: storage alias,
operation, key, size), ``status`` (``succeeded``, ``failed``, ``deferred`` or ``rejected``),
``error_code`` (empty on success), ``attempts`` and ``duration_ms``.
The Prometheus metrics (``storage_guard.integrations.metrics``) count the same events without
it: ``telemetry`` calls their counter directly, so a signal with no receivers costs nothing.
"""

from django.dispatch import Signal

save_finished = Signal(use_caching=True)  # receivers looked up once per sender, not per save
