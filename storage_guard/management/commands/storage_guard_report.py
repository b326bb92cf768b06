"""``manage.py storage_guard_report``: what went wrong with saves, and whether it is the data.

Thin: parses arguments (``--since`` with ``management.arguments.parse_since``), calls
``operations.report.build_report`` and prints it as aligned tables or, with ``--json``, as one
JSON document (``docs/report.md``). Exit status 0, or 2 on a usage error.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from storage_guard import conf
from storage_guard.management.arguments import (
    DEFAULT_SINCE,
    checked,
    parse_since,
    whole_number,
)
from storage_guard.models import SaveAttempt
from storage_guard.operations import report


class Command(BaseCommand):
    help = ("Report on saves: success and retry rates, errors by code, durations, the largest "
            "failing keys and payloads, and keys whose identical content failed then succeeded.")

    def add_arguments(self, parser):
        parser.add_argument("--since",
                            type=checked(parse_since), default=DEFAULT_SINCE,
                            metavar="AGE",
                            help="saves made in the last AGE (90s, 30m, 24h, 7d, 2w) or since an "
                                 "ISO date; default 24h")
        parser.add_argument("--storage", metavar="ALIAS", help="only saves of this storage alias")
        parser.add_argument("--top",
                            type=whole_number("--top", 1, report.MAX_TOP),
                            default=report.DEFAULT_TOP, metavar="N",
                            help=f"rows per list (1 to {report.MAX_TOP}); default "
                                 f"{report.DEFAULT_TOP}")
        parser.add_argument("--json", action="store_true", help="print one JSON document")

    def handle(self, *args, **options):
        alias = options["storage"]
        if alias is not None:
            self.check_alias(alias)
        start = options["since"]
        if isinstance(start, str):  # call_command(since="7d") skips argparse's conversion
            start = parse_since(start)
        data = report.build_report(since=start, storage=alias, top=options["top"])
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.stdout.write(report.render_text(data), ending="")

    def check_alias(self, alias: str) -> None:
        if alias in settings.STORAGES:
            return
        recorded = SaveAttempt.objects.using(conf.get("DATABASE_ALIAS")).filter(
            storage_alias=alias).exists()
        if not recorded:
            known = ", ".join(sorted(settings.STORAGES))
            raise CommandError(f"--storage {alias!r} is not in settings.STORAGES and no save "
                               f"was recorded for it (known: {known})", returncode=2)
