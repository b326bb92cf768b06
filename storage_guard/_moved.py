"""Old import paths of modules that moved in 0.1.0, kept working for one release.

``import storage_guard.retry`` (say) still works: it returns the module at its new place, the very
same module object, and warns with a ``DeprecationWarning`` naming the new path. The table below is
the list of moves; CHANGELOG.md gives it too. Removed in 0.2.0.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

MOVED = {
    "storage_guard.admin_summary": "storage_guard.admin.summary",
    "storage_guard.breaker": "storage_guard.saving.breaker",
    "storage_guard.circuits": "storage_guard.operations.circuits",
    "storage_guard.classification": "storage_guard.saving.classification",
    "storage_guard.doctor": "storage_guard.operations.doctor",
    "storage_guard.documents": "storage_guard.contrib.generated.documents",
    "storage_guard.durations": "storage_guard.operations.durations",
    "storage_guard.headers": "storage_guard.saving.headers",
    "storage_guard.messages": "storage_guard.contrib.generated.user_messages",
    "storage_guard.metrics": "storage_guard.integrations.metrics",
    "storage_guard.multipart": "storage_guard.saving.multipart",
    "storage_guard.observe": "storage_guard.saving.telemetry",
    "storage_guard.payload": "storage_guard.saving.payload",
    "storage_guard.presets": "storage_guard.saving.presets",
    "storage_guard.purge": "storage_guard.operations.purge",
    "storage_guard.rebuild": "storage_guard.operations.rebuild",
    "storage_guard.record_writer": "storage_guard.saving.success_records",
    "storage_guard.recording": "storage_guard.saving.records",
    "storage_guard.replay": "storage_guard.operations.redelivery",
    "storage_guard.report": "storage_guard.operations.report",
    "storage_guard.responses": "storage_guard.contrib.generated.responses",
    "storage_guard.retry": "storage_guard.saving.retry_loop",
    "storage_guard.safetext": "storage_guard.saving.safetext",
    "storage_guard.sentry": "storage_guard.integrations.sentry",
    "storage_guard.sentry_integration": "storage_guard.integrations.sentry_integration",
    "storage_guard.spool": "storage_guard.saving.spool",
    "storage_guard.stash": "storage_guard.saving.stash",
    "storage_guard.task_framework": "storage_guard.integrations.task_framework",
    "storage_guard.timeouts": "storage_guard.saving.timeouts",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name of ``MOVED`` and loads it as the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module) -> None:
        old = module.__name__
        new = MOVED[old]
        warnings.warn(f"{old} moved to {new}; the old import path stops working in "
                      f"storage_guard 0.2.0", DeprecationWarning, stacklevel=_caller_level())
        # The import system returns what sys.modules holds after exec_module: the real module,
        # so old and new names give the same object (patching one patches the other).
        sys.modules[old] = importlib.import_module(new)


def _caller_level() -> int:
    """The ``stacklevel`` that makes the warning name the line of the import: the first frame
    outside importlib and this module (``warnings`` itself skips importlib's bootstrap frames)."""
    frame, level = sys._getframe(2), 2  # 1 is exec_module, which calls warn
    while frame is not None and (_is_bootstrap(frame) or frame.f_code.co_filename in _OURS):
        if not _is_bootstrap(frame):
            level += 1
        frame = frame.f_back
    return level


def _is_bootstrap(frame) -> bool:
    name = frame.f_code.co_filename
    return "importlib" in name and "_bootstrap" in name


_OURS = {__file__, importlib.__file__}


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
