"""Optional integrations with other libraries: Sentry, Prometheus, the task framework."""
