"""A test-only app whose models break storage_guard's system checks, one rule at a time.

It is never in ``INSTALLED_APPS``: tests build its models inside ``isolate_apps`` (see
``builders.py``) so that ``manage.py check`` on the test project stays quiet.
"""
