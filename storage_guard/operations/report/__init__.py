"""The numbers behind ``manage.py storage_guard_report`` (``docs/report.md``)."""

from storage_guard.operations.report.queries import *  # noqa: F403
from storage_guard.operations.report.queries import (  # noqa: F401
    POSTGRES_SESSION,
    _build,
    _counts,
    _rates,
    _share,
)
