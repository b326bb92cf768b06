"""Argument types shared by the management commands: bad input names the option and the limit."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from storage_guard.operations.durations import parse_age


def checked(parse: Callable):
    """An argparse type from a parser that raises ``ValueError`` with a readable message."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


age = checked(parse_age)


def whole_number(option: str, low: int, high: int | None = None):
    """An argparse type for ``option``: a whole number from ``low`` (to ``high``)."""
    limits = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def convert(text: str) -> int:
        value = int(text) if text.strip().isdigit() else None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{option} must be a whole number {limits}, not {text!r}")
        return value

    return convert
