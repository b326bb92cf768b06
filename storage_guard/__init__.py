"""storage_guard: saves to S3-compatible storage that are retried, recorded and never lost.

The tree by role (``docs/architecture.md``): ``storage.py`` and ``saving/`` are the save path;
``operations/`` the tools that deliver, report, purge and diagnose later; ``admin/``, ``checks/``
and ``management/`` the Django faces of those; ``integrations/`` Sentry, Prometheus and the task
framework; ``contrib/generated/`` the generated-content feature.
"""

from storage_guard import _moved

__version__ = "0.1.0"

_moved.install()  # old import paths of moved modules, with a DeprecationWarning (see _moved.py)
