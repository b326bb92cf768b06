#!/usr/bin/env python
"""The example project's manage.py; ``python manage.py demo`` starts it all (docs/example.md)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
