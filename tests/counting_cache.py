"""A local-memory cache that counts its calls: to show what the breaker costs a save."""

from collections import Counter

from django.core.cache.backends.locmem import LocMemCache

CALLS: Counter = Counter()


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
            return super().get_many(*args, **kwargs)
        finally:
            self._inside_get_many = False

    def delete_many(self, *args, **kwargs):
        CALLS["delete_many"] += 1
        return super().delete_many(*args, **kwargs)
