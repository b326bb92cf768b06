"""storage_guard: saves to S3-compatible storage that are retried, recorded and never lost."""

__version__ = "0.1.0"
