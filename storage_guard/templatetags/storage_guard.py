"""Template filters of the admin pages: ``{% load storage_guard %}``."""

from django import template

from storage_guard import clock

register = template.Library()


@register.filter
def sg_when(value) -> str:
    """A stored time (datetime or ISO string) as ``2026-11-27 03:24:31 UTC``."""
    return clock.when(value)
