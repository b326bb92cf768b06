"""Features built on the guarded save for a particular audience."""
