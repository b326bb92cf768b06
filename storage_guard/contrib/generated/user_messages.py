"""What to tell a person whose content did not reach storage.

A message names what happened in plain words and what the person can do; it never contains a
stack trace, an exception name or an error code (those go in the machine-readable fields of
``responses.SaveOutcome``). The wording is chosen by *reason*, a coarse group of
the classification table's codes and categories (``storage_guard.saving.classification``).
"""

from __future__ import annotations

from django.utils.translation import gettext as _

__all__ = ["REASONS", "message_for", "reason_for", "saved_message"]

REASONS = ("timeout", "network", "throttled", "too_large", "key_rejected", "bad_characters",
           "refused", "unavailable", "unknown")

TOO_LARGE_CODES = frozenset({"EntityTooLarge", "HeadersTooLarge", "MetadataTooLarge",
                             "RequestHeaderSectionTooLarge"})
KEY_CODES = frozenset({"KeyTooLong", "KeyTooLongError"})
# The name, type or details hold characters no request can carry (saving.headers, keys).
CHARACTER_CODES = frozenset({"InvalidHeader", "InvalidKey", "RequestNotSent", "EncodingError",
                             "ParamValidation"})
CATEGORY_REASONS = {
    "timeout": "timeout",
    "network": "network",
    "throttled": "throttled",
    "validation": "refused",
    "server": "unavailable",
    "unavailable": "unavailable",
    "auth": "unavailable",
    "client": "unavailable",
}


def reason_for(code: str | None, category: str | None) -> str:
    """The reason group of an error ``code`` and ``category`` (one of ``REASONS``)."""
    if code in KEY_CODES:
        return "key_rejected"
    if code in TOO_LARGE_CODES:
        return "too_large"
    if code in CHARACTER_CODES:
        return "bad_characters"
    return CATEGORY_REASONS.get(category or "", "unknown")


def _what_happened(reason: str) -> str:
    return {
        "timeout": _("The storage service took too long to answer."),
        "network": _("We could not reach the storage service."),
        "throttled": _("The storage service is busy right now."),
        "too_large": _("The file, or the details sent with it, are larger than the storage "
                       "service accepts."),
        "key_rejected": _("The file name is too long for the storage service."),
        "bad_characters": _("The file name or its type contains characters the storage "
                            "service cannot accept."),
        "refused": _("The storage service refused the file."),
        "unavailable": _("The storage service is unavailable at the moment."),
    }.get(reason, _("The file could not be stored."))


def _what_to_do(reason: str, *, kept: bool, inline: bool) -> str:
    if kept and inline:
        return _("Your file is shown here and you can download it now. A copy is kept and "
                 "will be stored automatically; nothing is lost.")
    if kept:
        return _("A copy is kept and will be stored automatically; it is too large to show "
                 "here, so please come back for it later. Nothing is lost.")
    if reason == "key_rejected":
        advice = _("Please save it again under a shorter name.")
    elif reason == "too_large":
        advice = _("Please make it smaller and save it again.")
    elif reason == "bad_characters":
        advice = _("Please rename it using letters, digits and dashes, and save it again.")
    elif reason == "refused":
        advice = _("Trying the same file again will not help; please check the file, or "
                   "contact the site's administrators.")
    else:
        advice = _("Please try again in a few minutes.")
    if inline:
        return _("It has not been kept, so please download it now.") + " " + advice
    return advice


def message_for(reason: str, *, kept: bool, inline: bool) -> str:
    """The person-facing message for content that did not reach storage.

    ``kept``: the bytes are stashed and a retry will deliver them. ``inline``: the response
    carries the content itself, so the page can show it and offer the download.
    """
    return f"{_what_happened(reason)} {_what_to_do(reason, kept=kept, inline=inline)}"


def saved_message() -> str:
    return _("Your file has been saved.")
