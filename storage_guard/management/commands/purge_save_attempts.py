"""``manage.py purge_save_attempts --older-than 30d``: delete old records in batches.

Thin: parses arguments, calls ``storage_guard.operations.purge.purge``, reports counts.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from storage_guard.management.arguments import age, whole_number
from storage_guard.operations import purge


class Command(BaseCommand):
    help = ("Delete save records older than AGE in batches. Unresolved failures (and their "
            "stashed bytes) are kept unless --include-unresolved is given.")

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=age, required=True, metavar="AGE",
                            help="delete records made more than AGE ago (12h, 30d, 2w)")
        parser.add_argument("--include-unresolved", action="store_true",
                            help="also delete failed and deferred saves and their stashed bytes")
        parser.add_argument("--batch-size",
                            type=whole_number("--batch-size", 1, 100_000), default=purge.BATCH_SIZE)
        parser.add_argument("--pause", type=float, default=0.0, metavar="SECONDS",
                            help="sleep between batches (for replicas or a busy disk)")
        parser.add_argument("--dry-run", action="store_true", help="count only, delete nothing")
        parser.add_argument("--json", action="store_true", help="print one JSON document")

    def handle(self, *args, **options):
        result = purge.purge(options["older_than"],
                             include_unresolved=options["include_unresolved"],
                             batch_size=options["batch_size"], dry_run=options["dry_run"],
                             pause=options["pause"])
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
            return
        verb = "would delete" if result.dry_run else "deleted"
        line = f"{verb} {result.deleted} record(s)"
        if result.unresolved_deleted:
            line += f", {result.unresolved_deleted} of them unresolved"
        if not result.dry_run:
            line += f", freed {result.stashes_freed} stash(es), in {result.batches} batch(es)"
        self.stdout.write(self.style.SUCCESS(line))
