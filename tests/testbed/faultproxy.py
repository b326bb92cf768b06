"""A fault-injecting HTTP/1.1 proxy to put between boto3 and an S3 server.

Usage::

    from tests.testbed.faultproxy import FaultProxy, error

    proxy = FaultProxy("127.0.0.1", seaweed.port, seed=0).start()
    s3 = seaweed.client(endpoint_url=proxy.endpoint_url)

    proxy.script(["reset", "slowdown", "pass"])   # next 3 matching requests
    proxy.script([error(403, "AccessDenied", "Access Denied")])
    proxy.configure(reset=0.2, stall=0.05, methods={"PUT"}, seed=1)
    proxy.outage(5, action="reset")                # everything fails for 5 s
    with proxy.outage_window(action="slowdown"):   # ... or until the block ends
        ...
    proxy.throttle(1024 * 1024)                    # request bodies arrive at 1 MB/s
    proxy.clear()                                  # pass everything again
    proxy.counts["PUT"], proxy.counts["reset"], proxy.log[-1]
    proxy.stop()

How it works: a threaded TCP server on a free ``127.0.0.1`` port (one
thread per client connection).  It parses each HTTP/1.1 request (keep-alive,
``Content-Length`` and ``Transfer-Encoding: chunked`` bodies; it answers
``Expect: 100-continue`` itself), decides an action, and for ``pass`` sends
the complete request (minus ``Expect``; ``Host`` and every other header kept,
the body byte-for-byte, so aws-chunked payloads survive) to the upstream over
its own keep-alive connection and relays the complete response back.

Actions (strings, or ``error(status, code, message)`` objects):

``pass``                 forward to upstream
``reset``                read the request head, then close with RST, no answer
``reset_mid_body``       read about half the body (>= 1 byte), then RST
``lose_answer``          forward the request, let the upstream do the work, then
                         RST instead of relaying its answer (script/outage only)
``stall``                read the request, answer nothing for ``stall_seconds``
                         (ends early when the client hangs up or the proxy stops)
``slowdown``             503 ``SlowDown``
``internal``             500 ``InternalError``
``throttle_429``         429 ``TooManyRequests`` (Cloudflare R2 style)
``service_unavailable``  503 ``ServiceUnavailable``
``error(s, code, msg)``  any S3 XML error; counted as ``"error"`` and as
                         ``"error:<status>:<code>"``

Error answers are proper S3 XML documents with ``x-amz-request-id`` and
``x-amz-id-2``; the request body is read fully first and the connection is
closed afterwards (``Connection: close``).  If the upstream cannot be reached
the client gets ``502 BadGateway`` (counted as ``"upstream_error"`` on top of
``"pass"``).  HEAD requests get error responses without a body, like S3.

Policy: a request *matches* when its method is in ``methods`` (``None`` = all)
and its request target (path plus query string, e.g. ``/bucket/key?uploads``)
starts with ``path_prefix``.  An active outage applies to every request; else
a matching request takes the next scripted action, else a seeded random
draw against the configured probabilities; non-matching requests pass.
``counts`` (a ``Counter`` copy) has ``"requests"``, one key per action taken
and one per HTTP method; ``log`` lists ``(method, path, action)``;
``records`` adds the request headers, raw body bytes received and the status
sent; ``connections`` counts accepted client connections.  Other helpers:
``extend_script``, ``script_remaining``, ``end_outage``, ``actions()``,
``stall_seconds`` (settable), ``throttle(bytes_per_second)`` (request bodies
with a ``Content-Length`` are read from the client no faster than that, like
a slow uplink; ``None`` lifts it; ``clear()`` lifts it too).  botocore 1.44
over plain http sends PutObject / UploadPart with ``Content-Length`` and
``Expect: 100-continue`` (no aws-chunked; that only happens over https).
"""

from __future__ import annotations

import collections
import contextlib
import random
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Self
from xml.sax.saxutils import escape

__all__ = [
    "ACTIONS",
    "ERROR_ACTIONS",
    "ErrorAction",
    "FaultProxy",
    "RequestRecord",
    "error",
]

MAX_LINE = 65536
MAX_HEADERS = 200
RANDOM_ACTIONS = (
    "reset",
    "reset_mid_body",
    "stall",
    "slowdown",
    "internal",
    "throttle_429",
    "service_unavailable",
)
ACTIONS = ("pass", *RANDOM_ACTIONS, "lose_answer")


@dataclass(frozen=True)
class ErrorAction:
    """Answer with an S3 XML error ``status``/``code``/``message``."""

    status: int
    code: str
    message: str

    @property
    def name(self) -> str:
        return f"error:{self.status}:{self.code}"


def error(status: int, code: str, message: str = "") -> ErrorAction:
    """A custom error action, e.g. ``error(400, "RequestTimeout", "...")``."""
    return ErrorAction(int(status), code, message or code)


ERROR_ACTIONS: dict[str, ErrorAction] = {
    "slowdown": ErrorAction(503, "SlowDown", "Please reduce your request rate."),
    "internal": ErrorAction(
        500, "InternalError", "We encountered an internal error. Please try again."
    ),
    "throttle_429": ErrorAction(
        429, "TooManyRequests", "Reduce your concurrent request rate for the same object."
    ),
    "service_unavailable": ErrorAction(
        503, "ServiceUnavailable", "Service is unable to handle request."
    ),
}

Action = str | ErrorAction

_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _check_action(action: Action) -> Action:
    if isinstance(action, ErrorAction):
        return action
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    return action


def _action_name(action: Action) -> str:
    return action.name if isinstance(action, ErrorAction) else action


@dataclass
class RequestRecord:
    """Everything the proxy saw of one request."""

    method: str
    path: str
    action: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body_bytes: int = 0  # raw body bytes received (incl. chunk framing)
    status: int | None = None  # status sent to the client, if any

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


class _Closed(Exception):
    """The peer closed the connection (cleanly, between messages)."""


class _BadMessage(Exception):
    """Unparseable HTTP."""


# -- low-level HTTP helpers ---------------------------------------------------


def _read_line(rfile: BinaryIO) -> bytes:
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise _BadMessage("line too long")
    return line


def _read_headers(rfile: BinaryIO) -> tuple[list[tuple[str, str]], bytes]:
    headers: list[tuple[str, str]] = []
    raw = bytearray()
    while True:
        line = _read_line(rfile)
        if not line:
            raise _BadMessage("connection closed inside headers")
        raw += line
        if line in (b"\r\n", b"\n"):
            return headers, bytes(raw)
        if len(headers) >= MAX_HEADERS:
            raise _BadMessage("too many headers")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _BadMessage(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None


def _is_chunked(headers: list[tuple[str, str]]) -> bool:
    te = _get(headers, "Transfer-Encoding")
    return te is not None and "chunked" in te.lower()


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    value = _get(headers, "Content-Length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError as exc:
        raise _BadMessage(f"bad Content-Length {value!r}") from exc
    if length < 0:
        raise _BadMessage("negative Content-Length")
    return length


def _read_exact(rfile: BinaryIO, n: int) -> bytes:
    data = rfile.read(n) if n else b""
    if len(data) != n:
        raise _BadMessage(f"short body: wanted {n} bytes, got {len(data)}")
    return data


def _read_chunked_raw(rfile: BinaryIO) -> bytes:
    """Read a chunked body and return it verbatim (framing and trailers)."""
    raw = bytearray()
    while True:
        size_line = _read_line(rfile)
        if not size_line:
            raise _BadMessage("connection closed inside chunked body")
        raw += size_line
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise _BadMessage(f"bad chunk size line {size_line!r}") from exc
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = _read_line(rfile)
                if not trailer:
                    raise _BadMessage("connection closed inside trailers")
                raw += trailer
                if trailer in (b"\r\n", b"\n"):
                    return bytes(raw)
        raw += _read_exact(rfile, size)
        crlf = _read_line(rfile)
        if crlf not in (b"\r\n", b"\n"):
            raise _BadMessage("missing CRLF after chunk")
        raw += crlf


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _request_id() -> str:
    return secrets.token_hex(8).upper()


def _host_id() -> str:
    return secrets.token_urlsafe(48)


def error_response(
    action: ErrorAction, path: str, *, close: bool = True, head: bool = False
) -> bytes:
    """The raw HTTP response for an S3 XML error (no body for HEAD requests,
    as S3 does: botocore then reports the status code as the error Code)."""
    request_id = _request_id()
    host_id = _host_id()
    resource = path.split("?", 1)[0]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(action.code)}</Code>"
        f"<Message>{escape(action.message)}</Message>"
        f"<Resource>{escape(resource)}</Resource>"
        f"<RequestId>{request_id}</RequestId>"
        f"<HostId>{escape(host_id)}</HostId></Error>"
    ).encode()
    reason = _REASONS.get(action.status, "Error")
    if action.code == "SlowDown":
        reason = "Slow Down"  # S3's reason phrase, what botocore shows for HEAD
    lines = [
        f"HTTP/1.1 {action.status} {reason}",
        "Content-Type: application/xml",
        f"Content-Length: {len(body)}",
        f"x-amz-request-id: {request_id}",
        f"x-amz-id-2: {host_id}",
        "Server: storage-guard-faultproxy",
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


# -- the proxy ----------------------------------------------------------------


class _Upstream:
    """One keep-alive connection to the upstream server."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")
        self.used = False
        self.on_close: Callable[[socket.socket], None] | None = None

    def close(self) -> None:
        if self.on_close is not None:
            self.on_close(self.sock)
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.sock.close()


class FaultProxy:
    """Fault-injecting HTTP proxy; see the module docstring."""

    host = "127.0.0.1"

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        seed: int | None = 0,
        *,
        stall_seconds: float = 30.0,
        upstream_timeout: float = 60.0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = int(upstream_port)
        self.upstream_timeout = upstream_timeout
        self.port: int | None = None
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._probabilities: dict[Action, float] = {}
        self._methods: frozenset[str] | None = None
        self._path_prefix: str | None = None
        self._stall_seconds = float(stall_seconds)
        self._throttle: float | None = None
        self._script: collections.deque[Action] = collections.deque()
        self._outage_action: Action | None = None
        self._outage_until: float | None = None  # None with action = open-ended
        self._counts: collections.Counter[str] = collections.Counter()
        self._records: list[RequestRecord] = []
        self._connections = 0
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()

    # -- lifecycle --------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FaultProxy is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        if self._listener is not None:
            return self
        self._stop.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(128)
        listener.settimeout(0.1)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, abort stalls, close every connection."""
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
            self._accept_thread = None
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FaultProxy 127.0.0.1:{self.port} -> {self.upstream_host}:{self.upstream_port}>"

    # -- policy API -------------------------------------------------------

    def script(self, actions: Iterable[Action]) -> None:
        """The next matching requests take ``actions`` in order (replaces
        any remaining script); afterwards the random policy applies again."""
        checked = [_check_action(a) for a in actions]
        with self._lock:
            self._script = collections.deque(checked)

    def extend_script(self, actions: Iterable[Action]) -> None:
        """Append ``actions`` to the current script."""
        checked = [_check_action(a) for a in actions]
        with self._lock:
            self._script.extend(checked)

    @property
    def script_remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def configure(
        self,
        reset: float = 0.0,
        reset_mid_body: float = 0.0,
        stall: float = 0.0,
        slowdown: float = 0.0,
        internal: float = 0.0,
        throttle_429: float = 0.0,
        service_unavailable: float = 0.0,
        *,
        errors: Mapping[ErrorAction, float] | None = None,
        stall_seconds: float | None = None,
        methods: Iterable[str] | None = None,
        path_prefix: str | None = None,
        seed: int | None = None,
    ) -> None:
        """Set the random policy (replacing the previous one).

        Each matching request without a scripted action draws once from the
        seeded RNG: with probability ``reset`` it is reset, and so on;
        otherwise it passes.  ``errors`` adds custom ``error(...)`` actions
        with their probabilities.  ``methods``/``path_prefix`` define which
        requests match (also for ``script``).  ``seed`` re-seeds the RNG;
        ``stall_seconds`` of ``None`` keeps the current value.
        """
        probabilities: dict[Action, float] = {
            "reset": reset,
            "reset_mid_body": reset_mid_body,
            "stall": stall,
            "slowdown": slowdown,
            "internal": internal,
            "throttle_429": throttle_429,
            "service_unavailable": service_unavailable,
        }
        for action, p in (errors or {}).items():
            probabilities[_check_action(action)] = p
        for action, p in probabilities.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"probability for {_action_name(action)} out of range: {p}")
        if sum(probabilities.values()) > 1.0 + 1e-9:
            raise ValueError("probabilities add up to more than 1")
        with self._lock:
            self._probabilities = {a: p for a, p in probabilities.items() if p > 0}
            self._methods = frozenset(m.upper() for m in methods) if methods is not None else None
            self._path_prefix = path_prefix
            if stall_seconds is not None:
                self._stall_seconds = float(stall_seconds)
            if seed is not None:
                self._rng.seed(seed)

    @property
    def stall_seconds(self) -> float:
        with self._lock:
            return self._stall_seconds

    @stall_seconds.setter
    def stall_seconds(self, value: float) -> None:
        with self._lock:
            self._stall_seconds = float(value)

    def throttle(self, bytes_per_second: float | None) -> None:
        """Read request bodies at most this fast from now on (``None``: full speed)."""
        with self._lock:
            self._throttle = float(bytes_per_second) if bytes_per_second else None

    def outage(self, seconds: float, action: Action = "reset") -> None:
        """From now on, for ``seconds``, every request gets ``action``."""
        action = _check_action(action)
        with self._lock:
            self._outage_action = action
            self._outage_until = time.monotonic() + seconds

    @contextlib.contextmanager
    def outage_window(self, action: Action = "reset") -> Iterator[FaultProxy]:
        """Every request gets ``action`` until the ``with`` block ends."""
        action = _check_action(action)
        with self._lock:
            self._outage_action = action
            self._outage_until = None
        try:
            yield self
        finally:
            self.end_outage()

    def end_outage(self) -> None:
        with self._lock:
            self._outage_action = None
            self._outage_until = None

    def clear(self) -> None:
        """Pass everything again: no script, no outage, no random faults,
        all requests match.  Counters and log are kept."""
        with self._lock:
            self._script.clear()
            self._probabilities = {}
            self._methods = None
            self._path_prefix = None
            self._outage_action = None
            self._outage_until = None
            self._throttle = None

    def reset_counters(self) -> None:
        with self._lock:
            self._counts.clear()
            self._records.clear()
            self._connections = 0

    @property
    def counts(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self._counts)

    @property
    def log(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return [(r.method, r.path, r.action) for r in self._records]

    @property
    def records(self) -> list[RequestRecord]:
        """Detailed records (headers, body size, status) in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def connections(self) -> int:
        """Client connections accepted (keep-alive makes this < requests)."""
        with self._lock:
            return self._connections

    def requests_for(self, method: str | None = None, path_contains: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self._records
                if (method is None or r.method == method.upper())
                and (path_contains is None or path_contains in r.path)
            )

    def actions(self) -> list[str]:
        """The action names taken so far, in order."""
        with self._lock:
            return [r.action for r in self._records]

    # -- decision ---------------------------------------------------------

    def _matches(self, method: str, path: str) -> bool:
        if self._methods is not None and method not in self._methods:
            return False
        return self._path_prefix is None or path.startswith(self._path_prefix)

    def _decide(
        self, method: str, path: str, headers: list[tuple[str, str]]
    ) -> tuple[Action, RequestRecord, float]:
        with self._lock:
            action: Action = "pass"
            if self._outage_action is not None and (
                self._outage_until is None or time.monotonic() < self._outage_until
            ):
                action = self._outage_action
            else:
                if self._outage_action is not None:  # window elapsed
                    self._outage_action = None
                    self._outage_until = None
                if self._matches(method, path):
                    if self._script:
                        action = self._script.popleft()
                    elif self._probabilities:
                        draw = self._rng.random()
                        cumulative = 0.0
                        for candidate, p in self._probabilities.items():
                            cumulative += p
                            if draw < cumulative:
                                action = candidate
                                break
            name = _action_name(action)
            self._counts["requests"] += 1
            self._counts[method] += 1
            self._counts[name] += 1
            if isinstance(action, ErrorAction) and name not in ERROR_ACTIONS:
                self._counts["error"] += 1
            record = RequestRecord(method, path, name, headers)
            self._records.append(record)
            return action, record, self._stall_seconds

    # -- serving ----------------------------------------------------------

    def _forget_socket(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.discard(sock)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        while not self._stop.is_set():
            try:
                conn, _addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(
                target=self._serve_connection,
                args=(conn,),
                name=f"faultproxy-{self.port}-conn",
                daemon=True,
            )
            with self._lock:
                self._connections += 1
                self._conns.add(conn)
                self._threads.add(thread)
            thread.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        upstream: _Upstream | None = None
        reset = False
        try:
            while not self._stop.is_set():
                keep_open, reset, upstream = self._serve_one(conn, rfile, upstream)
                if not keep_open:
                    break
        except (_Closed, _BadMessage, OSError):
            pass
        finally:
            if upstream is not None:
                upstream.close()
            with contextlib.suppress(OSError):
                rfile.close()
            if not reset:
                with contextlib.suppress(OSError):
                    conn.close()
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())

    def _serve_one(
        self, conn: socket.socket, rfile: BinaryIO, upstream: _Upstream | None
    ) -> tuple[bool, bool, _Upstream | None]:
        """Handle one request; return (keep connection, was reset, upstream)."""
        request_line = _read_line(rfile)
        while request_line in (b"\r\n", b"\n"):  # tolerate stray CRLF
            request_line = _read_line(rfile)
        if not request_line:
            raise _Closed
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3:
            raise _BadMessage(f"bad request line {request_line!r}")
        method, target, _version = parts
        method = method.upper()
        headers, _raw_head = _read_headers(rfile)
        path = target
        if "://" in path:  # absolute-form target
            path = "/" + path.split("://", 1)[1].partition("/")[2]

        action, record, stall_seconds = self._decide(method, path, headers)

        if action == "reset":
            _reset(conn)
            return False, True, upstream

        chunked = _is_chunked(headers)
        length = None if chunked else _content_length(headers)
        has_body = chunked or bool(length)
        expect = _get(headers, "Expect")
        if has_body and expect is not None and expect.lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

        if action == "reset_mid_body":
            if chunked:
                size_line = _read_line(rfile)
                try:
                    first = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    first = 0
                partial = rfile.read(max(1, first // 2)) if first else b""
                record.body_bytes = len(size_line) + len(partial)
            elif length:
                record.body_bytes = len(rfile.read(max(1, length // 2)))
            _reset(conn)
            return False, True, upstream

        with self._lock:
            rate = self._throttle
        if chunked:
            body = _read_chunked_raw(rfile)
        elif rate:
            body = self._read_throttled(rfile, length or 0, rate)
        else:
            body = _read_exact(rfile, length or 0)
        record.body_bytes = len(body)

        if action == "stall":
            self._stall(conn, stall_seconds)
            return False, False, upstream

        if isinstance(action, ErrorAction) or action in ERROR_ACTIONS:
            err = action if isinstance(action, ErrorAction) else ERROR_ACTIONS[action]
            conn.sendall(error_response(err, path, head=method == "HEAD"))
            record.status = err.status
            self._graceful_close(conn)
            return False, False, upstream

        # pass
        client_close = (_get(headers, "Connection") or "").lower() == "close"
        forward_head = self._forward_head(request_line, headers)
        try:
            upstream, status, response, upstream_close = self._exchange(
                upstream, method, forward_head, body
            )
        except (OSError, _BadMessage, _Closed):
            if upstream is not None:
                upstream.close()
            with self._lock:
                self._counts["upstream_error"] += 1
            bad = ErrorAction(502, "BadGateway", "The upstream server is unreachable.")
            conn.sendall(error_response(bad, path, head=method == "HEAD"))
            record.status = 502
            self._graceful_close(conn)
            return False, False, None
        record.status = status
        if action == "lose_answer":
            _reset(conn)
            return False, True, upstream
        conn.sendall(response)
        if upstream_close:
            upstream.close()
            upstream = None
            # the response may have been delimited by close
            return False, False, None
        return not client_close, False, upstream

    @staticmethod
    def _forward_head(request_line: bytes, headers: list[tuple[str, str]]) -> bytes:
        lines = [request_line.rstrip(b"\r\n")]
        for name, value in headers:
            if name.lower() == "expect":
                continue
            lines.append(f"{name}: {value}".encode("latin-1"))
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _exchange(
        self, upstream: _Upstream | None, method: str, head: bytes, body: bytes
    ) -> tuple[_Upstream, int, bytes, bool]:
        """Send the request upstream, read the full response.

        A reused keep-alive connection that turns out dead before any
        response byte arrives is replaced once.
        """
        for attempt in (1, 2):
            if upstream is None:
                upstream = _Upstream(self.upstream_host, self.upstream_port, self.upstream_timeout)
                with self._lock:  # so stop() can interrupt a slow upstream
                    self._conns.add(upstream.sock)
                upstream.on_close = self._forget_socket
            reused = upstream.used
            try:
                upstream.sock.sendall(head + body)
                upstream.used = True
                status, response, close = self._read_response(upstream.rfile, method)
                return upstream, status, response, close
            except _Closed:
                upstream.close()
                upstream = None
                if not reused or attempt == 2:
                    raise
            except (ConnectionResetError, BrokenPipeError):
                upstream.close()
                upstream = None
                if not reused or attempt == 2:
                    raise
        raise _Closed  # pragma: no cover

    @staticmethod
    def _read_response(rfile: BinaryIO, method: str) -> tuple[int, bytes, bool]:
        """Read one complete response; return (status, raw bytes, must close)."""
        while True:
            status_line = _read_line(rfile)
            if not status_line:
                raise _Closed
            parts = status_line.decode("latin-1").split(None, 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                raise _BadMessage(f"bad status line {status_line!r}")
            status = int(parts[1])
            headers, raw_head = _read_headers(rfile)
            if 100 <= status < 200 and status != 101:
                continue  # interim response; we already sent our own 100
            break
        raw = bytearray(status_line + raw_head)
        close = (_get(headers, "Connection") or "").lower() == "close"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, bytes(raw), close
        if _is_chunked(headers):
            raw += _read_chunked_raw(rfile)
            return status, bytes(raw), close
        length = _content_length(headers)
        if length is not None:
            raw += _read_exact(rfile, length)
            return status, bytes(raw), close
        raw += rfile.read()  # delimited by close
        return status, bytes(raw), True

    def _read_throttled(self, rfile: BinaryIO, length: int, rate: float) -> bytes:
        """Read ``length`` body bytes at no more than ``rate`` bytes per second."""
        step = max(1024, int(rate / 20))  # twenty reads a second keep the pace smooth
        started = time.monotonic()
        body = bytearray()
        while len(body) < length and not self._stop.is_set():
            body += _read_exact(rfile, min(step, length - len(body)))
            ahead = len(body) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        if len(body) < length:
            raise _Closed
        return bytes(body)

    def _stall(self, conn: socket.socket, seconds: float) -> None:
        """Say nothing for ``seconds``; stop early if the client hangs up or
        the proxy stops."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                readable, _, _ = select.select([conn], [], [], min(remaining, 0.1))
            except (OSError, ValueError):
                break
            if readable:
                try:
                    if not conn.recv(65536):
                        break  # client gave up
                except OSError:
                    break

    @staticmethod
    def _graceful_close(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        # Drain briefly so unread client bytes don't turn our FIN into an RST
        # before the client has read the response.
        conn.settimeout(0.5)
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass
