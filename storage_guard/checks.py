"""PLACEHOLDER by the lead; helper-2 replaces this file."""
