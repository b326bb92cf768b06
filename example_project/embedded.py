"""The example's own S3: SeaweedFS with the fault proxy in front, for when no endpoint is set.

``manage.py demo`` starts it (``EmbeddedS3.start``) in its own process and runs the development
server without the autoreloader, so there is exactly one SeaweedFS and one proxy. While it runs,
``var/embedded-s3.json`` tells other processes (``manage.py retry_failed_saves`` in a second
terminal) where the proxy listens; ``EmbeddedS3Storage`` reads it when ``endpoint_url`` is unset.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from storage_guard.storage import GuardedS3Storage
from tests.testbed.faultproxy import FaultProxy
from tests.testbed.seaweed import SeaweedServer

logger = logging.getLogger(__name__)

_proxy: FaultProxy | None = None


def state_file() -> Path:
    return Path(settings.EXAMPLE_VAR_DIR) / "embedded-s3.json"


def use_proxy(proxy: FaultProxy | None) -> None:
    """Make ``proxy`` the one the fault switch controls (the demo's, or a test's)."""
    global _proxy
    _proxy = proxy


def current_proxy() -> FaultProxy | None:
    return _proxy


class EmbeddedS3:
    """SeaweedFS (data under ``var/seaweed``) and a fault proxy, both on 127.0.0.1."""

    def __init__(self, var_dir: Path, bucket: str):
        self.var_dir = Path(var_dir)
        self.bucket = bucket
        self.seaweed = SeaweedServer(self.var_dir / "seaweed", keep_workdir=True)
        self.proxy: FaultProxy | None = None

    def start(self) -> EmbeddedS3:
        self.seaweed.start(timeout=60)
        self.seaweed.create_bucket(self.bucket)
        self.proxy = FaultProxy(self.seaweed.host, self.seaweed.port, seed=None).start()
        use_proxy(self.proxy)
        state_file().write_text(json.dumps({
            "endpoint_url": self.proxy.endpoint_url, "seaweed_url": self.seaweed.endpoint_url,
            "pid": os.getpid()}))
        logger.info("embedded S3 on %s (SeaweedFS %s), bucket %s", self.proxy.endpoint_url,
                    self.seaweed.endpoint_url, self.bucket)
        return self

    def stop(self) -> None:
        state_file().unlink(missing_ok=True)
        use_proxy(None)
        if self.proxy is not None:
            self.proxy.stop()
        self.seaweed.stop()

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def running_endpoint() -> str | None:
    """The proxy URL of the embedded S3 of a running ``manage.py demo``, if any."""
    if _proxy is not None:
        return _proxy.endpoint_url
    try:
        state = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None
    return state["endpoint_url"] if _alive(state.get("pid")) else None


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class EmbeddedS3Storage(GuardedS3Storage):
    """``GuardedS3Storage`` that finds the embedded S3 when no ``endpoint_url`` is configured."""

    def __init__(self, **options):
        if not options.get("endpoint_url"):
            options["endpoint_url"] = running_endpoint()
            if options["endpoint_url"] is None:
                raise ImproperlyConfigured(
                    "No S3 endpoint: set S3_ENDPOINT_URL, or start the embedded S3 with "
                    "`python manage.py demo` (scripts/demo) and keep it running.")
        super().__init__(**options)
