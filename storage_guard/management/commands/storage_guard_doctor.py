"""``manage.py storage_guard_doctor``: is every guarded storage configured and reachable?

Thin: calls ``operations.doctor.examine`` and prints its report. Exit status 0 when every
storage passed, 1 when any has a problem, 2 on a usage error.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from storage_guard.operations import doctor
from storage_guard.storage import guarded_aliases


class Command(BaseCommand):
    help = ("Check every GuardedS3Storage: settings, breaker cache, record database, and a "
            "canary object put, read and deleted, each step timed; clock skew against S3.")

    def add_arguments(self, parser):
        parser.add_argument("--storage", action="append", metavar="ALIAS",
                            help="check only this alias (repeatable)")
        parser.add_argument("--json", action="store_true", help="print one JSON document")

    def handle(self, *args, **options):
        known = guarded_aliases()
        aliases = options["storage"]
        for alias in aliases or ():
            if alias not in known:
                raise CommandError(f"--storage {alias!r} is not a GuardedS3Storage alias in "
                                   f"settings.STORAGES (guarded: {', '.join(known) or 'none'})",
                                   returncode=2)
        report = doctor.examine(aliases)
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2, default=str))
        else:
            for line in doctor.as_text(report):
                self.stdout.write(line)
        if not report.ok:
            raise CommandError("storage_guard_doctor found problems (see above)", returncode=1)
