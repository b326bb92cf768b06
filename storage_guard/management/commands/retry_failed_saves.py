"""``manage.py retry_failed_saves``: deliver stashed saves again (see ``docs/commands.md``).

Thin: parses arguments, calls ``operations.redelivery`` (which the admin action and the retry
task call too), reports counts. Exit status: 0 all delivered, 1 some still failing or some
that can never be delivered, 2 usage error, 3 the circuit is open: the run's probe failed and it
stopped early, leaving records untouched.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from storage_guard import clock
from storage_guard.management.arguments import age, whole_number
from storage_guard.operations import redelivery
from storage_guard.saving import spool

CIRCUIT_OPEN_EXIT = 3


class Command(BaseCommand):
    help = ("Replay failed and deferred saves from the stash, oldest first; mark them recovered "
            "once S3 has the bytes. Safe to run in several processes at once on PostgreSQL.")

    def add_arguments(self, parser):
        parser.add_argument("--limit",
                            type=whole_number("--limit", 1), help="replay at most N saves")
        parser.add_argument("--error-code", help="only saves whose last error has this code")
        parser.add_argument("--older-than", type=age, metavar="AGE",
                            help="only saves made at least AGE ago (90s, 10m, 12h, 30d, 2w)")
        parser.add_argument("--storage", metavar="ALIAS", help="only saves of this storage alias")
        parser.add_argument("--dry-run", action="store_true",
                            help="list what would be replayed; send nothing, change nothing")
        parser.add_argument("--json", action="store_true", help="print one JSON document")

    def handle(self, *args, **options):
        alias = options["storage"]
        if alias is not None and alias not in settings.STORAGES:
            raise CommandError(f"--storage {alias!r} is not in settings.STORAGES "
                               f"(known: {', '.join(sorted(settings.STORAGES))})", returncode=2)
        selection = redelivery.Selection(limit=options["limit"], error_code=options["error_code"],
                                     older_than=options["older_than"], storage_alias=alias)
        if options["dry_run"]:
            return self.dry_run(selection, as_json=options["json"])
        self.ingest_spool(quiet=options["json"])
        progress = Progress(self.stdout, total=redelivery.count(selection)) \
            if self.stdout.isatty() and not options["json"] else None
        result = redelivery.replay(selection, via="command",
                               on_item=progress.step if progress else None)
        if progress:
            progress.done()
        self.report(result, as_json=options["json"])
        if result.circuit_open:
            raise CommandError(result.circuit_line(), returncode=CIRCUIT_OPEN_EXIT)
        if result.failed:
            raise CommandError(f"{result.failed} save(s) still failing", returncode=1)
        undeliverable = sum(1 for item in result.items if item.undeliverable)
        if undeliverable:
            raise CommandError(f"{undeliverable} save(s) skipped that can never be delivered: "
                               f"no storage can be built for them (see the lines above); "
                               f"fix their storage or abandon them", returncode=1)

    def ingest_spool(self, *, quiet: bool) -> None:
        """Record the saves the last-resort spool kept while the database was out."""
        ingested = spool.ingest()
        if (ingested.recorded or ingested.failed) and not quiet:
            self.stdout.write(ingested.summary())

    def dry_run(self, selection, *, as_json: bool) -> None:
        records = redelivery.pending(selection)
        if as_json:
            self.stdout.write(json.dumps({"dry_run": True, "would_replay": len(records), "items": [
                {"record_id": r.pk, "key": r.key, "status": r.status, "error_code": r.error_code,
                 "attempts": r.attempts, "size": r.size, "created_at": r.created_at.isoformat()}
                for r in records]}, indent=2))
            return
        for r in records:
            self.stdout.write(f"would replay #{r.pk} {r.status} {r.error_code or '-'} "
                              f"{clock.when(r.created_at)} {r.key}")
        self.stdout.write(f"{len(records)} save(s) would be replayed (dry run: nothing sent)")
        waiting = len(spool.entries())
        if waiting:
            self.stdout.write(f"{waiting} save(s) wait in the last-resort spool (recorded and "
                              f"replayed by a run without --dry-run)")

    def report(self, result: redelivery.ReplayResult, *, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
            return
        for item in result.items:
            if item.outcome == redelivery.FAILED:
                self.stdout.write(f"failed again #{item.record_id} {item.code} "
                                  f"({item.attempts} attempts) {item.key}")
            elif item.outcome == redelivery.SKIPPED:
                self.stdout.write(f"skipped #{item.record_id}: {item.reason}")
        style = self.style.SUCCESS if result.ok else self.style.ERROR
        self.stdout.write(style(result.summary()))


class Progress:
    """A one-line bar redrawn in place; only used when stdout is a terminal."""

    WIDTH = 30

    def __init__(self, out, total: int):
        self.out, self.total, self.seen = out, max(total, 1), 0
        self.counts = {redelivery.DELIVERED: 0, redelivery.FAILED: 0, redelivery.SKIPPED: 0}

    def step(self, item) -> None:
        self.seen += 1
        self.counts[item.outcome] += 1
        filled = min(self.WIDTH, self.WIDTH * self.seen // self.total)
        self.out.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.seen}/{self.total}"
                       f"  delivered {self.counts['delivered']}  failed {self.counts['failed']}"
                       f"  skipped {self.counts['skipped']}", ending="")
        self.out.flush()

    def done(self) -> None:
        self.out.write("")
