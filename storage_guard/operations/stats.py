"""Outcome counts and success rates of a set of saves, defined once for the report
(``operations.report``) and the admin's summary page (``admin.summary``).

``outcome_counts(rows)`` is one grouped scan (by status and error code) of whatever rows the
caller selected; ``OutcomeCounts.rates()`` gives each rate as a ``Share``, a part of a whole, which
the report prints as a fraction (``0.625``) and the admin as a percentage (``62.50``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Count, Max, Q, Sum

from storage_guard.models import UNRESOLVED, Status


@dataclass(frozen=True)
class Share:
    """``part`` of ``whole``; no value when ``whole`` is 0."""

    part: int
    whole: int

    def fraction(self, digits: int = 4) -> float | None:
        """Between 0 and 1, rounded to ``digits`` decimals (the report's JSON)."""
        return round(self.part / self.whole, digits) if self.whole else None

    def percent(self) -> str | None:
        """A percentage with two decimals, without the sign (the admin's summary)."""
        return f"{100 * self.part / self.whole:.2f}" if self.whole else None


@dataclass
class OutcomeCounts:
    saves: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Status.values, 0))
    first_try: int = 0  # succeeded on the first attempt
    retried: int = 0  # needed more than one attempt, whatever the outcome
    retried_ok: int = 0  # succeeded after more than one attempt
    retried_attempts: int = 0  # every attempt of the retried saves
    # error code -> {"n": saves that ended on it, "transient_n": of those stored as transient,
    # "category": the stored category}
    final_errors: dict[str, dict] = field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        return self.by_status.get(Status.SUCCEEDED, 0)

    @property
    def recovered(self) -> int:
        return self.by_status.get(Status.RECOVERED, 0)

    @property
    def unresolved(self) -> int:
        return sum(self.by_status.get(status, 0) for status in UNRESOLVED)

    @property
    def extra_attempts(self) -> int:
        """Attempts beyond the first, over all retried saves."""
        return self.retried_attempts - self.retried

    def rates(self) -> dict[str, Share]:
        return {
            "success": Share(self.succeeded, self.saves),
            "first_try_success": Share(self.first_try, self.saves),
            "retry": Share(self.retried, self.saves),
            "success_after_retry": Share(self.retried_ok, self.retried),
            "eventual_success": Share(self.succeeded + self.recovered, self.saves),
        }


def outcome_counts(rows) -> OutcomeCounts:
    """Saves by status, first tries, retries and final errors: one grouped scan of ``rows``."""
    groups = (rows.order_by().values("status", "error_code")
              .annotate(n=Count("id"), first_try=Count("id", filter=Q(attempts=1)),
                        retried=Count("id", filter=Q(attempts__gt=1)),
                        retried_attempts=Sum("attempts", filter=Q(attempts__gt=1)),
                        transient_n=Count("id", filter=Q(transient=True)),
                        category=Max("error_category")))
    counts = OutcomeCounts()
    for group in groups:
        counts.saves += group["n"]
        counts.by_status[group["status"]] = counts.by_status.get(group["status"], 0) + group["n"]
        counts.retried += group["retried"]
        counts.retried_attempts += group["retried_attempts"] or 0
        if group["status"] == Status.SUCCEEDED:
            counts.first_try += group["first_try"]
            counts.retried_ok += group["retried"]
        if group["error_code"]:
            final = counts.final_errors.setdefault(
                group["error_code"], {"n": 0, "transient_n": 0, "category": ""})
            final["n"] += group["n"]
            final["transient_n"] += group["transient_n"]
            final["category"] = max(final["category"], group["category"] or "")
    return counts
