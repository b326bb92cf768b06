"""``Expect: 100-continue`` only where it pays: on bodies of ``EXPECT_CONTINUE_BYTES`` or more.

botocore asks every S3 request whose body is a file (a ``put_object`` of bytes included) to send
its headers first and wait for the server's ``100 Continue`` before sending the body
(``botocore.handlers.add_expect_header``). That handshake spares the upload of a large body
that the server would refuse anyway (a bad signature, a missing bucket, a redirect); a small
body costs less to send than the wait. For a small PUT it is one more round trip (on a network
to S3, the largest part of the save) and, measured on the 2-core machines of
``docs/benchmarks.md``, about 70 µs of CPU for the interim response.

The AWS SDKs that made this a setting send the header only from a size on: 2 MB for Kotlin and
Go (``ContinueHeaderThresholdBytes``), 1 MB in the JavaScript SDK v2. The guarded storage
does the same: a request whose body is shorter than ``EXPECT_CONTINUE_BYTES`` (2 MiB) goes
without it; nothing else about the request changes. A body of unknown length keeps it; ``0``
keeps botocore's behaviour.
"""

from __future__ import annotations

from functools import partial

from botocore.utils import determine_content_length

EVENT = "before-call.s3"  # where botocore adds the header: this handler is registered after it
HEADER = "Expect"


def watch(session, threshold: int) -> None:
    """Have the clients of this boto3 session send ``Expect: 100-continue`` only with bodies of
    at least ``threshold`` bytes (register before the session makes its clients)."""
    if threshold > 0:
        session.events.register_last(EVENT, partial(_drop_for_small_bodies, threshold),
                                     unique_id="storage_guard.expect_continue")


def _drop_for_small_bodies(threshold: int, params, **kwargs) -> None:
    """botocore calls this with every S3 call's request dict: it must never raise. Only a body
    whose length is known and below ``threshold`` loses the header."""
    headers = params.get("headers")
    if not headers or HEADER not in headers:
        return
    try:
        length = determine_content_length(params.get("body"))
    except Exception:  # noqa: BLE001 - a body botocore cannot measure keeps the header
        return
    if length is not None and length < threshold:
        del headers[HEADER]
