"""The one logger storage_guard writes to: ``storage_guard`` (configure it in ``LOGGING``).

Every module logs through ``logger`` here. Its filter escapes control characters in the values
a line carries (``saving.safetext``), so a caller's key or header cannot forge a log line.
"""

from __future__ import annotations

import logging

from storage_guard.saving.safetext import install_log_escaping

LOGGER_NAME = "storage_guard"
logger = install_log_escaping(logging.getLogger(LOGGER_NAME))
