"""The admin for ``SaveAttempt``: the changelist with its actions (``save_attempts``) and the
summary page's numbers (``summary``). Importing this package registers the admin."""

from storage_guard.admin.save_attempts import SaveAttemptAdmin

__all__ = ["SaveAttemptAdmin"]
