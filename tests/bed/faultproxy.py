"""Moved to storage_guard.testing.faultproxy; kept so older imports keep working."""

from storage_guard.testing.faultproxy import *  # noqa: F403
from storage_guard.testing.faultproxy import __all__  # noqa: F401
