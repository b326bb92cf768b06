"""Moved to storage_guard.testing.seaweed; kept so older imports keep working."""

from storage_guard.testing.seaweed import *  # noqa: F403
from storage_guard.testing.seaweed import __all__  # noqa: F401
