"""The save path: everything a ``GuardedS3Storage`` save runs, in the order of
``docs/architecture.md`` (payload, key and headers, retry loop, breaker, records, stash)."""
