"""A local-memory cache that counts its calls: to show what the breaker costs a save."""

from collections import Counter

from django.core.cache.backends.locmem import LocMemCache

CALLS: Counter = Counter()
# Functions run once each just after the next get_many has read its values, before they are
# returned: what another thread or process does while a read is on its way back.
AFTER_NEXT_READ: list = []
# Functions run once each just before the next add (the first write of a counted failure).
BEFORE_NEXT_ADD: list = []


class CountingLocMemCache(LocMemCache):
    """Counts the calls a client makes (``get_many`` is one call, not one ``get`` per key)."""

    _inside_get_many = False

    def get(self, *args, **kwargs):
        if not self._inside_get_many:
            CALLS["get"] += 1
        return super().get(*args, **kwargs)

    def get_many(self, *args, **kwargs):
        CALLS["get_many"] += 1
        self._inside_get_many = True
        try:
            values = super().get_many(*args, **kwargs)
        finally:
            self._inside_get_many = False
        while AFTER_NEXT_READ:
            AFTER_NEXT_READ.pop(0)()
        return values

    def add(self, *args, **kwargs):
        while BEFORE_NEXT_ADD:
            BEFORE_NEXT_ADD.pop(0)()
        return super().add(*args, **kwargs)

    def delete_many(self, *args, **kwargs):
        CALLS["delete_many"] += 1
        return super().delete_many(*args, **kwargs)


class BreakableLocMemCache(CountingLocMemCache):
    """A counting cache whose reads fail while ``BREAKABLE["down"]`` is true (a cache outage)."""

    def get_many(self, *args, **kwargs):
        if BREAKABLE["down"]:
            raise ConnectionError("the cache is down (test)")
        return super().get_many(*args, **kwargs)


BREAKABLE = {"down": False}
