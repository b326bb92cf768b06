"""``GuardedS3Storage``: django-storages' ``S3Storage`` with retries, breaker, records and stash.

The save path reads like the process: fit the key, read the payload once, check the headers,
attempt (with backoff, deadline and breaker), then record the outcome and, if the bytes did not
arrive, stash them so that nothing is lost.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from functools import cached_property

from botocore.config import Config
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files import File
from django.utils.module_loading import import_string
from storages.backends.s3 import S3File, S3Storage
from storages.utils import clean_name

from storage_guard import conf, keys, options
from storage_guard.errors import SaveFailed, SaveRejected
from storage_guard.keys.traversal import overwrite_name, validate_name
from storage_guard.log import logger
from storage_guard.models import Status
from storage_guard.operations import rebuild
from storage_guard.saving import (
    expect_continue,
    headers,
    presets,
    records,
    signed_hash,
    spool,
    stash,
    success_records,
)
from storage_guard.saving.breaker import CircuitBreaker
from storage_guard.saving.multipart import MultipartUpload
from storage_guard.saving.payload import Payload
from storage_guard.saving.retry_loop import Outcome, RetryPolicy, call_with_retries
from storage_guard.saving.telemetry import SaveTrace
from storage_guard.saving.timeouts import AttemptTimeouts, ClientSet, TimeoutRule

# django-storages 1.14.5 and later: S3Storage.get_available_name only checks the name when the
# storage overwrites (get_available_overwrite_name); before, Django's loop decides.
_S3_CHECKS_OVERWRITE_NAME = "get_available_name" in vars(S3Storage)

# The name this thread's latest _fit returned, with its storage and max_length (see _fit).
_last_fitted = threading.local()
POLICY_MEMO_SIZE = 64  # sizes whose retry policy a storage keeps (policy_for)

# The SaveAttempt written by the latest save in this thread or task (see save_with_record).
_last_record: ContextVar = ContextVar("storage_guard_last_record", default=None)


class GuardedS3File(S3File):
    """An ``S3File`` whose download is retried on transient errors like every other read."""

    def _get_file(self):
        if self._file is not None or "r" not in self._mode:
            return super()._get_file()

        def download():
            self._file = None
            return super(GuardedS3File, self)._get_file()

        return self._storage._run("open", self.obj.key, download)

    file = property(_get_file, S3File._set_file)


class GuardedS3Storage(S3Storage):
    """A drop-in ``S3Storage`` whose saves are retried, recorded and never lost."""

    def get_default_settings(self):
        return {**super().get_default_settings(), **conf.storage_defaults(), "alias": None}

    def __init__(self, **settings):
        preset = settings.get("preset")
        if preset is not None and preset not in presets.PRESETS:
            raise ImproperlyConfigured(presets.unknown_preset_message("GuardedS3Storage option "
                                                                      "preset", preset))
        # the storage's own preset fills in what its options leave out (saving/presets.py)
        super().__init__(**{**(presets.option_values(preset) if preset else {}), **settings})
        problem = options.storage_problem(self)
        if problem:
            raise ImproperlyConfigured(problem)
        self._find_alias(settings)
        self.client_config = self.client_config.merge(Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
        ))

    def _find_alias(self, options: dict) -> None:
        """Name this storage by its ``STORAGES`` alias, or describe it for replay (no secrets)."""
        self.storage_spec = None
        if not self.alias:
            self.alias = rebuild.configured_alias(type(self), options) or None
        if not self.alias:
            self.storage_spec = rebuild.describe(type(self), options)

    # ----------------------------------------------------------------- configuration
    @cached_property
    def storage_alias(self) -> str:
        if self.alias:
            return self.alias
        from django.core.files.storage import storages

        for alias, instance in getattr(storages, "_storages", {}).items():
            if instance is self:
                return alias
        return ""

    @cached_property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_attempts, deadline=self.retry_deadline,
                           backoff_base=self.backoff_base, backoff_cap=self.backoff_cap,
                           attempt_budget=min(self.read_timeout, self.retry_deadline / 2))

    @cached_property
    def timeout_rule(self) -> TimeoutRule:
        return TimeoutRule(self.put_timeout_floor, self.put_timeout_rate,
                           self.put_timeout_ceiling)

    @cached_property
    def clients(self) -> ClientSet:
        return ClientSet(self)

    def policy_for(self, size: int) -> RetryPolicy:
        """The policy for sending ``size`` bytes: the deadline grows by the bytes' travel time
        at ``put_timeout_rate``, and a retry starts only if a first try's timeout is left.

        A pure function of ``size`` (the policy and the rule are fixed): the policies of the
        last ``POLICY_MEMO_SIZE`` distinct sizes are kept, as most saves repeat a size.
        """
        memo = self._policies
        found = memo.get(size)
        if found is None:
            policy, rule = self.policy, self.timeout_rule
            deadline = self.retry_deadline + rule.allowance(size)
            if len(memo) >= POLICY_MEMO_SIZE:
                memo.clear()
            found = memo[size] = RetryPolicy(
                max_attempts=policy.max_attempts, deadline=deadline,
                backoff_base=policy.backoff_base, backoff_cap=policy.backoff_cap,
                attempt_budget=min(rule.seconds(size), deadline / 2))
        return found

    @cached_property
    def _policies(self) -> dict[int, RetryPolicy]:
        return {}

    @cached_property
    def breaker(self) -> CircuitBreaker:
        return CircuitBreaker(f"{self.endpoint_url or 'aws'}|{self.bucket_name}",
                              threshold=self.breaker_threshold, cooldown=self.breaker_cooldown,
                              cache_alias=conf.get("BREAKER_CACHE"),
                              probe_timeout=self.connect_timeout + self.read_timeout,
                              window=self.breaker_window,
                              initial_cooldown=self.breaker_initial_cooldown,
                              cache_backoff=conf.get("BREAKER_CACHE_BACKOFF"),
                              refresh=conf.get("BREAKER_REFRESH"))

    def _create_session(self):
        # one session per thread for the resource and the timeout classes' clients
        return self.clients.session()

    def _new_session(self):
        session = super()._create_session()
        signed_hash.watch(session)  # the PUTs of its clients give their body's SHA-256
        expect_continue.watch(session, self.expect_continue_bytes)  # small bodies: no wait
        return session

    @property
    def key_limits(self) -> keys.KeyLimits:
        return keys.KeyLimits.for_storage(self)

    @property
    def client(self):
        return self.connection.meta.client

    # ----------------------------------------------------------------- names and keys
    def get_available_name(self, name, max_length=None):
        # Django may append "_abc1234" to make the name unique: fit again so that the name whose
        # existence was checked is the one that will be saved.
        fitted = self._fit(name, max_length)
        available = self._available_name(fitted, max_length)
        return fitted if available == fitted else self._fit(available, max_length)

    def _available_name(self, name, max_length):
        """``S3Storage.get_available_name``. When all it would do is check the name (the
        storage overwrites and the name needs no truncation), the check is made here without
        ``pathlib`` (``keys.traversal``); every other case is django-storages' own."""
        if self.file_overwrite and _S3_CHECKS_OVERWRITE_NAME:
            checked = overwrite_name(clean_name(name), max_length)
            if checked is not None:
                return checked
        return super().get_available_name(name, max_length)

    def generate_filename(self, filename):
        return self._fit(super().generate_filename(filename))

    def _fit(self, name: str, max_length: int | None = None) -> str:
        """``name`` cleaned and fitted to the key limits (``keys.fit_name``), or refused.

        A save fits its name twice, in ``get_available_name`` and in ``_save``: within one
        ``save()``, the name this storage has just fitted in this thread is returned as it is
        when asked again with no stricter ``max_length`` (fitting a fitted name changes nothing).
        """
        last = _last_fitted.__dict__
        if name is last.get("name") and last.get("storage") is self and (
                max_length is None or max_length == last.get("max_length")):
            return name
        try:
            fitted = keys.fit_name(clean_name(name), location=self.location,
                                   limits=self.key_limits, max_length=max_length)
        except SaveRejected as exc:
            self._record_rejection(name, exc)
            raise
        last.update(name=fitted, storage=self, max_length=max_length)
        return fitted

    # ----------------------------------------------------------------- the save path
    def save(self, name, content, max_length=None):
        """Django's ``Storage.save``, step for step, validating each distinct name once.

        Django validates the name before and after ``get_available_name`` and after ``_save``
        (``validate_file_name``, a pure function of the name): three ``pathlib`` parses of what
        is almost always one name. Here a name equal to one already validated is not checked
        again; every name that differs is, by ``keys.traversal.validate_name`` (the same check
        without ``pathlib``). ``tests/test_storage_save.py`` pins Django's method to the one
        this mirrors (5.2 to 6.1), so a change there fails the suite.
        """
        _last_fitted.__dict__.clear()  # a name fitted before this save is fitted again
        if name is None:
            name = content.name
        if not hasattr(content, "chunks"):
            content = File(content, name)
        validate_name(name)
        available = self.get_available_name(name, max_length=max_length)
        if available != name:
            validate_name(available)
        saved = self._save(available, content)
        if saved != available:
            validate_name(saved)
        return saved

    def save_with_record(self, name, content, max_length=None):
        """``save()``, also returning the ``SaveAttempt`` it wrote (None if recording failed).

        With ``on_failure="defer"`` the name alone does not say whether the bytes arrived; the
        record does (status ``succeeded`` or ``deferred``).
        """
        token = _last_record.set(None)
        try:
            with success_records.written_now():  # the success record too, so it has its pk
                saved = self.save(name, content, max_length=max_length)
            return saved, _last_record.get()
        finally:
            _last_record.reset(token)

    def _save(self, name, content):
        name = self._fit(name)
        key = self._normalize_name(name)
        params = self._get_write_parameters(key, content)
        payload = self._read_payload(content, params)
        try:
            self._check_headers(name, key, params, payload)
            trace = self._trace("save", key, payload, params, hashed=False)
            outcome = self._run_put(key, payload, params, trace)
            trace.sha256 = payload.sha256  # a large payload was hashed alongside the PUT
            if outcome.ok:
                self._record_success(name, params, outcome, trace)
                return name
            record, entry = self._record_failure(name, payload, params, outcome, trace)
        finally:
            payload.close()
        if record is None:
            return self._finish_spooled(name, entry, payload.size, outcome, trace)
        return self._finish_failure(name, record, outcome)

    def _read_payload(self, content, params) -> Payload:
        if self.gzip and params["ContentType"] in self.gzip_content_types \
                and "ContentEncoding" not in params:
            content = self._compress_content(content)
            params["ContentEncoding"] = "gzip"
        return Payload.from_content(content, memory_limit=self.spool_max_memory,
                                    signed=self._signed_whole)

    @cached_property
    def signs_payload(self) -> bool:
        """Whether a single PUT is signed with its body's SHA-256 (``saving.signed_hash``)."""
        return signed_hash.signs_payload(self)

    def _signed_whole(self, size: int) -> bool:
        """Whether ``size`` bytes go in one signed PUT, whose signature gives their hash."""
        return self.signs_payload and size < self.multipart_threshold

    @cached_property
    def multipart_threshold(self) -> int:
        """Payloads of this many bytes or more are sent in parts (``transfer_config``)."""
        return self.transfer_config.multipart_threshold

    def _check_headers(self, name, key, params, payload) -> None:
        try:
            headers.check_headers(key, params, max_metadata_bytes=self.max_metadata_bytes,
                                  max_header_bytes=self.max_header_bytes)
        except SaveRejected as exc:
            self._record_rejection(name, exc, payload=payload, params=params)
            raise

    def _trace(self, operation: str, key: str, payload: Payload | None = None,
               params: dict | None = None, *, hashed: bool = True) -> SaveTrace:
        """``hashed=False``: leave ``sha256`` for the caller to fill in after the PUT, so the
        payload's hash can run alongside it."""
        return SaveTrace(storage_alias=self.storage_alias, operation=operation, key=key,
                         key_bytes=len(key.encode("utf-8", "surrogatepass")),
                         size=payload.size if payload else None,
                         content_type=(params or {}).get("ContentType", ""),
                         sha256=payload.sha256 if payload and hashed else "")

    def _run_put(self, key: str, payload: Payload, params: dict, trace: SaveTrace) -> Outcome:
        if payload.size >= self.multipart_threshold:
            return MultipartUpload(self, key, payload, params, listener=trace).run()
        policy = self.policy_for(payload.size)
        timeouts = AttemptTimeouts(self.timeout_rule, payload.size,
                                   ends_at=time.monotonic() + policy.deadline)
        return call_with_retries(lambda: self._put_once(key, payload, params, timeouts.current),
                                 policy, guard=self.breaker, listener=trace, timeouts=timeouts)

    def _put_once(self, key: str, payload: Payload, params: dict, timeout: float):
        """One ``put_object`` on the client whose read timeout is ``timeout`` seconds; the
        SHA-256 its signature carries becomes the payload's (no second pass over the bytes)."""
        client = self.clients.client(timeout)
        signed_hash.expect()
        try:
            return client.put_object(Bucket=self.bucket_name, Key=key, Body=payload.body(),
                                     **params)
        finally:
            payload.adopt_sha256(signed_hash.take())

    def _finish_failure(self, name: str, record, outcome: Outcome) -> str:
        self._schedule_retry(record)
        if self.on_failure == "defer":
            return name
        raise self._save_failed(outcome, record_id=record.pk, key=record.key, size=record.size)

    def _save_failed(self, outcome: Outcome, **context) -> SaveFailed:
        result = outcome.classification
        failure = SaveFailed(result.message or str(outcome.error), code=result.code,
                             transient=result.transient, category=result.category,
                             attempts=outcome.attempt_count, **context)
        failure.__cause__ = outcome.error
        return failure

    def _finish_spooled(self, name: str, entry: str, size: int, outcome: Outcome,
                        trace: SaveTrace) -> str:
        """No record: ``defer`` still returns the name when the spool kept the bytes; otherwise
        (and when even the spool failed) the caller gets ``SaveFailed``, never a database error.
        """
        if entry and self.on_failure == "defer":
            return name
        raise self._save_failed(outcome, record_id=None, key=trace.key, size=size,
                                spool_entry=entry, kept=bool(entry))

    def _schedule_retry(self, record) -> None:
        if conf.get("RETRY_WITH_TASKS"):
            from storage_guard.tasks import schedule_retry

            schedule_retry(record)

    # ----------------------------------------------------------------- records
    def _base_fields(self, name: str, trace: SaveTrace, params: dict | None) -> dict:
        """The columns every record of a save shares, taken from its trace."""
        return {
            "storage_alias": trace.storage_alias, "bucket": self.bucket_name or "", "name": name,
            "key": trace.key, "key_bytes": trace.key_bytes, "size": trace.size,
            "sha256": trace.sha256, "content_type": trace.content_type[:255],
            "write_params": params or {}, "storage_spec": self.storage_spec,
        }

    def _record_success(self, name, params, outcome: Outcome, trace: SaveTrace) -> None:
        # Queued for success_records' background thread unless the caller needs it now.
        if not success_records.wants_success_record(outcome.attempt_count):
            return trace.succeeded(outcome)
        try:
            record = success_records.write_success(self._success_fields, name, params, outcome,
                                                   trace)
            if record is not None:
                trace.record_id = record.pk
                _last_record.set(record)
        except Exception as exc:  # noqa: BLE001 - a record must never fail a save that worked
            trace.record_failed(exc)
        trace.succeeded(outcome)

    def _success_fields(self, name, params, outcome: Outcome, trace: SaveTrace) -> dict:
        """A success record's columns (made by the record writer's thread when queued)."""
        fields = self._base_fields(name, trace, params)
        fields["status"] = Status.SUCCEEDED
        fields["attempts"] = outcome.attempt_count
        fields["duration_ms"] = outcome.duration_ms
        fields["attempt_log"] = [a.as_dict() for a in outcome.attempts] if trace.attempts else []
        return fields

    def _record_failure(self, name, payload, params, outcome: Outcome, trace: SaveTrace):
        """``(record, "")`` with the bytes stashed; ``(None, spool entry id)`` when the record or
        stash could not be written and the bytes went to the last-resort spool (``""``: lost)."""
        result = outcome.classification
        status = Status.DEFERRED if self.on_failure == "defer" else Status.FAILED
        fields = {
            **self._base_fields(name, trace, params), "status": status,
            "attempts": outcome.attempt_count, "duration_ms": outcome.duration_ms,
            "error_code": result.code, "error_category": result.category,
            "transient": result.transient, "error_message": result.message[:4000],
            "error_response": result.response, "request_id": result.request_id[:128],
            "host_id": result.host_id[:256],
            "attempt_log": [a.as_dict() for a in outcome.attempts],
        }
        try:
            plan = stash.stash(payload, stash_storage=self.stash_storage,
                               db_max_bytes=self.stash_db_max_bytes)
            # A stash file already written is named in the spool entry: never an orphan.
            fields.update(stash_backend=plan.backend, stash_location=plan.location)
            record = records.insert_failure(dict(fields), plan.db_bytes)
        except Exception as exc:  # noqa: BLE001 - the database (or stash) failed: spool the bytes
            trace.record_failed(exc)
            return None, self._spool(payload, fields, trace)
        trace.record_id = record.pk
        _last_record.set(record)
        trace.stashed(outcome, status)
        return record, ""

    def _spool(self, payload: Payload, fields: dict, trace: SaveTrace) -> str:
        """Write the last-resort spool entry; its id, or "" when the bytes could not be kept."""
        try:
            entry = spool.write(payload, fields, stash_options={
                "stash_storage": self.stash_storage, "stash_db_max_bytes": self.stash_db_max_bytes})
        except OSError as exc:
            logger.critical("save_lost %s: no record, no stash and no spool entry could be "
                            "written; the bytes are not kept: %s", trace.short_key, exc,
                            extra=trace.fields(event="save_lost", error_code=type(exc).__name__))
            return ""
        logger.error("save_spooled %s: the record could not be written; bytes kept in the "
                     "last-resort spool as entry %s (recorded by retry_failed_saves once the "
                     "database is back)", trace.short_key, entry,
                     extra=trace.fields(event="save_spooled", spool_entry=entry))
        return entry

    def _record_rejection(self, name, exc: SaveRejected, *, payload=None, params=None) -> None:
        key = exc.context.get("key") or self._normalize_name(clean_name(name))
        trace = self._trace("save", key, payload, params)
        try:
            record = records.insert_attempt(
                **self._base_fields(name, trace, params), status=Status.REJECTED,
                attempts=0, error_code=exc.code, error_category=exc.category, transient=False,
                error_message=str(exc.message)[:4000])
            exc.context["record_id"] = trace.record_id = record.pk
        except Exception as db_exc:  # noqa: BLE001 - the caller must see SaveRejected
            trace.record_failed(db_exc)
        trace.rejected(exc)

    # ----------------------------------------------------------------- delivery of stashed saves
    def redeliver(self, record) -> Outcome:
        """Send a stashed save's bytes to its key again, with the usual retries."""
        payload = Payload.from_bytes(stash.read(record))
        trace = self._trace("redeliver", record.key, payload, record.write_params)
        trace.record_id = record.pk
        try:
            outcome = self._run_put(record.key, payload, dict(record.write_params), trace)
        finally:
            payload.close()
        if outcome.attempts:  # a refusal by the open circuit sent nothing: nothing to report
            trace.finished(outcome)
        return outcome

    def verify(self, key: str, size: int | None) -> bool:
        """True when S3 has an object at ``key`` of the expected size."""
        head = self._run("head", key, lambda: self.client.head_object(
            Bucket=self.bucket_name, Key=key))
        return size is None or head["ContentLength"] == size

    # ----------------------------------------------------------------- reads, retried too
    def _run(self, operation: str, key: str, fn):
        trace = self._trace(operation, key)
        outcome = call_with_retries(fn, self.policy, guard=self.breaker, listener=trace)
        trace.finished(outcome)
        if not outcome.ok:
            raise outcome.error
        return outcome.value

    def _open(self, name, mode="rb"):
        key = self._normalize_name(clean_name(name))
        try:
            return self._run("open", key, lambda: self._open_file(name, mode))
        except OSError:
            pending = self._pending(key, mode)
            if pending is None:
                raise
            return stash.open_file(pending)

    def _open_file(self, name, mode):
        key = self._normalize_name(clean_name(name))
        from botocore.exceptions import ClientError

        try:
            return GuardedS3File(key, mode, self)
        except ClientError as err:
            if err.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                raise FileNotFoundError(f"File does not exist: {key}") from err
            raise

    def exists(self, name):
        key = self._normalize_name(clean_name(name))
        found = self._run("exists", key, lambda: super(GuardedS3Storage, self).exists(name))
        return found or self._pending(key) is not None

    def size(self, name):
        key = self._normalize_name(clean_name(name))
        try:
            return self._run("size", key, lambda: super(GuardedS3Storage, self).size(name))
        except OSError:
            pending = self._pending(key)
            if pending is None:
                raise
            return pending.size

    def listdir(self, name):
        key = self._normalize_name(clean_name(name))
        return self._run("listdir", key, lambda: super(GuardedS3Storage, self).listdir(name))

    def delete(self, name):
        key = self._normalize_name(clean_name(name))
        self._cancel_pending(key)
        return self._run("delete", key, lambda: super(GuardedS3Storage, self).delete(name))

    def _cancel_pending(self, key: str) -> None:
        """A deleted name's pending saves are cancelled, so no retry brings the file back."""
        try:
            cancelled = stash.cancel_pending(key)
        except Exception as exc:  # noqa: BLE001 - the delete itself must still happen
            logger.error("delete_not_cancelled %s: pending saves of this key could not be "
                         "cancelled (%s); a retry may bring the file back", key,
                         type(exc).__name__, extra={"event": "delete_not_cancelled",
                                                    "error_code": type(exc).__name__})
            cancelled = []
        dropped = spool.cancel(key)
        if cancelled or dropped:
            logger.warning("save_cancelled %s: deleted with %s pending save(s) (records %s)",
                           key, len(cancelled) + dropped, cancelled, extra={
                               "event": "save_cancelled", "record_ids": cancelled,
                               "spool_entries": dropped})

    def _pending(self, key: str, mode: str = "rb"):
        """A deferred save's record, when reads of ``key`` should be served from the stash (or
        from the last-resort spool, for a save not recorded yet)."""
        if self.on_failure != "defer" or "w" in mode:
            return None
        try:
            record = stash.find_pending(key)
        except Exception as exc:  # noqa: BLE001 - a read falls back to plain S3 behaviour
            logger.warning("pending_lookup_failed %s: %s", key, type(exc).__name__,
                           extra={"event": "pending_lookup_failed",
                                  "error_code": type(exc).__name__})
            record = None
        return record or spool.find(key)


def is_guarded(storage) -> bool:
    """Whether ``storage`` is a ``GuardedS3Storage``: an instance (a lazy one, such as
    ``default_storage``, too), a class, or a class's dotted path (a ``BACKEND`` in STORAGES)."""
    try:
        if isinstance(storage, str):
            storage = import_string(storage)
        if isinstance(storage, type):
            return issubclass(storage, GuardedS3Storage)
        return isinstance(storage, GuardedS3Storage)
    except (ImportError, ImproperlyConfigured):  # a BACKEND that is not there, or a lazy
        return False  # storage that cannot be built (E002-E011 say why)


def guarded_aliases() -> list[str]:
    """The aliases of ``settings.STORAGES`` whose backend is a ``GuardedS3Storage``, in order."""
    return [alias for alias, spec in django_settings.STORAGES.items()
            if is_guarded(spec.get("BACKEND", ""))]
