"""``manage.py demo``: the embedded S3 (SeaweedFS + fault proxy), the development server and a
retry worker (``example_project.worker``) that delivers stashed saves every few seconds.

The server runs without the autoreloader: a reload would start a second SeaweedFS and move the
proxy to a new port under the feet of the running page. Restart the command after code changes.
"""

from __future__ import annotations

import secrets
import signal
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from example_project.embedded import EmbeddedS3
from example_project.worker import RetryWorker

DEMO_USER = "admin"


class Command(BaseCommand):
    help = "Start the embedded S3 with its fault proxy and serve the example on 127.0.0.1:8000."
    requires_system_checks = []  # the storage needs the embedded S3 up; runserver checks later

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--no-admin", action="store_true",
                            help="do not create the demo superuser")
        parser.add_argument("--retry-every", type=float, default=5.0, metavar="SECONDS",
                            help="replay stashed saves every SECONDS (0: no retry worker; then "
                                 "run retry_failed_saves yourself); default 5")

    def handle(self, *args, addrport, no_admin, retry_every=5.0, **options):
        # SIGTERM (docker stop, kill) ends the server like Ctrl-C, so the embedded S3 stops too.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        if not no_admin:
            self.ensure_demo_admin()
        if not settings.EMBEDDED_S3:
            self.stdout.write(f"Using S3 at {settings.S3_ENDPOINT_URL} (no fault switch).")
            return self.serve(addrport, retry_every)
        with EmbeddedS3(settings.EXAMPLE_VAR_DIR, settings.S3_BUCKET) as s3:
            self.stdout.write(f"Embedded S3: SeaweedFS {s3.seaweed.endpoint_url}, fault proxy "
                              f"{s3.proxy.endpoint_url}, bucket {s3.bucket}.")
            return self.serve(addrport, retry_every)

    def serve(self, addrport: str, retry_every: float = 0) -> None:
        worker = RetryWorker(retry_every) if retry_every > 0 else None
        if worker is not None:
            worker.start()
            self.stdout.write(f"Retry worker: replays stashed saves every {retry_every:g}s.")
        self.stdout.write(f"Open http://{addrport}/ (Ctrl-C stops the server and the embedded S3).")
        try:
            call_command("runserver", addrport, use_reloader=False, skip_checks=False)
        finally:
            if worker is not None:
                worker.stop()

    def ensure_demo_admin(self) -> None:
        users = get_user_model()
        password_file = Path(settings.EXAMPLE_VAR_DIR) / "demo-admin-password.txt"
        if users.objects.filter(username=DEMO_USER).exists():
            known = password_file.read_text().strip() if password_file.exists() else "(unknown)"
            self.stdout.write(f"Admin user {DEMO_USER!r} exists (demo password {known}, kept in "
                              f"{password_file}).")
            return
        password = secrets.token_urlsafe(12)  # generated per machine, never in the repository
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        users.objects.create_superuser(DEMO_USER, "admin@example.invalid", password)
        self.stdout.write(self.style.WARNING(
            f"Created admin user {DEMO_USER!r} with password {password} (kept in "
            f"{password_file}): a local demo credential only."))
