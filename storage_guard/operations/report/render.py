"""The report as aligned text tables for people (``render_text``): the same data as the JSON
of ``build_report``, in the same order."""

from __future__ import annotations

import re

from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from storage_guard import clock
from storage_guard.models import Status
from storage_guard.saving.telemetry import cut_key

KEY_CHARS = 80
_NUMBER = re.compile(r"^(-|-?[\d.]+%?)$")


def render_text(report: dict) -> str:
    """Aligned tables for people: the same data as the JSON, in the same order."""
    window = report["window"]
    parts = [_("storage_guard report: saves from %(since)s to %(until)s, storage %(storage)s")
             % {"since": clock.when(window["since"]), "until": clock.when(window["until"]),
                "storage": window["storage"] or _("(all)")}]
    parts += [item["text"] for item in report.get("circuits", [])]
    parts += [""]
    parts += _table([_("measure"), _("value")], _summary_rows(report))
    parts += ["", _("Saves by status")]
    parts += _table([_("status"), _("saves")],
                    [[_status(k), v] for k, v in report["by_status"].items()])
    parts += ["", _("Duration of a save in ms (all attempts and pauses)")]
    parts += _table([_("outcome"), _("saves"), "p50", "p95", "p99"],
                    [[_duration_label(name), d["count"], d["p50"], d["p95"], d["p99"]]
                     for name, d in report["duration_ms"].items()])
    parts += ["", _("Errors by code (every failed attempt; final = the save ended on it)")]
    parts += _table([_("code"), _("transient"), _("category"), _("attempts"), _("share"),
                     _("saves"), _("final"), _("final share")],
                    [[e["code"], _yes_no(e["transient"]), e["category"], e["failed_attempts"],
                      _pct(e["attempt_share"]), e["saves_affected"], e["final_failures"],
                      _pct(e["final_share"])] for e in report["errors"]])
    parts += ["", _("Largest keys among failures")]
    parts += _table([_("key bytes"), _("failures"), _("codes"), _("key")],
                    [[k["key_bytes"], k["failures"], _codes(k["codes"]), _key(k["key"])]
                     for k in report["largest_failed_keys"]])
    parts += ["", _("Largest payloads among failures")]
    parts += _table([_("bytes"), _("status"), _("code"), "id", _("key")],
                    [[p["size"], _status(p["status"]), p["error_code"], p["id"], _key(p["key"])]
                     for p in report["largest_failed_payloads"]])
    parts += ["", *_same_data_text(report["same_data"])]
    return "\n".join(parts) + "\n"


def _summary_rows(report: dict) -> list[list]:
    rates = report["rates"]
    return [[_("saves"), report["saves"]],
            [_("succeeded in the request (first try)"),
             f"{_pct(rates['success'])} ({_pct(rates['first_try_success'])})"],
            [_("retry rate"), _pct(rates["retry"])],
            [_("success after a retry"), _pct(rates["success_after_retry"])],
            [_("eventual success (recovered too)"), _pct(rates["eventual_success"])]]


DURATION_LABELS = {"all": gettext_noop("all sent"),
                   "retried": gettext_noop("succeeded after a retry"),
                   "failed": gettext_noop("did not arrive")}
SAME_DATA_TITLES = {
    "intermittent": gettext_noop("Same data, different outcome: identical content failed, "
                                 "later succeeded (intermittent: network or S3 side)"),
    "changed_data": gettext_noop("Content changed between the failure and the success (the "
                                 "user's data changed)"),
    "unresolved": gettext_noop("No later success yet"),
}


def _duration_label(name: str) -> str:
    return _(DURATION_LABELS[name]) if name in DURATION_LABELS else name


def _status(value: str) -> str:
    """A status by its (translated) label; unknown values as they are."""
    return str(Status(value).label) if value in Status.values else value


def _same_data_text(same: dict) -> list[str]:
    lines = [_("Keys with a save that did not arrive: %(n)d") % {"n": same["keys_with_failures"]}]
    for verdict, title in SAME_DATA_TITLES.items():
        group = same[verdict]
        lines += ["", _("%(title)s: %(keys)d key(s), %(failures)d failure(s)") % {
            "title": _(title), "keys": group["keys"], "failures": group["failures"]}]
        lines += _table([_("failures"), _("codes"), _("last failure"), _("key")],
                        [[e["failures"], _codes(e["codes"]), clock.when(e["last_failure"]),
                          _key(e["key"])] for e in group["top"]])
    return lines


def _table(headers: list[str], rows: list[list]) -> list[str]:
    if not rows:
        return ["  " + _("(none)")]
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [all(_NUMBER.match(row[i]) for row in cells) for i in range(len(headers))]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(values):
        padded = [v.rjust(w) if num else v.ljust(w)
                  for v, w, num in zip(values, widths, numeric, strict=True)]
        return ("  " + "  ".join(padded)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(row) for row in cells)]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.2f}%"


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else (_("yes") if value else _("no"))


def _codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{code or '-'} x{n}" for code, n in sorted(codes.items(),
                                                               key=lambda kv: -kv[1]))


def _key(key: str) -> str:
    return cut_key(key, KEY_CHARS)
