"""Multipart uploads driven step by step, so a failed part is retried, not the whole upload.

Above ``transfer_config.multipart_threshold`` a save is: create the upload, send each part
(``multipart_chunksize`` bytes, read from the payload one part at a time), complete. Each of
these requests has its own retries (``call_with_retries``, the storage's breaker, a timeout that
fits the part's size), and all of them share the save's one deadline. An upload that will not
complete is aborted, with retries of its own: time for one abort is kept back from the
deadline, so the abort also runs inside it. An abort that still fails is logged with the
upload id (S3 bills the parts until a lifecycle rule removes them).

The save's attempt log lists every failed request (with its step, e.g. ``part 3``) and, on
success, one ``OK`` entry: ``attempts`` is one plus the number of requests that were retried.
"""

from __future__ import annotations

import dataclasses
import time

from botocore.exceptions import ClientError
from s3transfer.upload import UploadSubmissionTask
from s3transfer.utils import FULL_OBJECT_CHECKSUM_ARGS, set_default_checksum_algorithm

from storage_guard.log import logger
from storage_guard.saving.classification import classify
from storage_guard.saving.retry_loop import AttemptInfo, Outcome, call_with_retries
from storage_guard.saving.timeouts import AttemptTimeouts

CREATE_BLOCKLIST = (*FULL_OBJECT_CHECKSUM_ARGS, "MpuObjectSize", "ChecksumType")


class MultipartUpload:
    """One multipart save of ``payload`` to ``key``; ``run()`` returns its ``Outcome``."""

    def __init__(self, storage, key: str, payload, params: dict, *, listener=None,
                 clock=time.monotonic):
        self.storage, self.key, self.payload, self.clock = storage, key, payload, clock
        self.listener = listener
        self.params = dict(params)
        if storage.client_config.request_checksum_calculation != "when_required":
            set_default_checksum_algorithm(self.params)
        self.chunk = storage.transfer_config.multipart_chunksize
        self.policy = storage.policy_for(payload.size)
        self.started = clock()
        self.ends_at = self.started + self.policy.deadline
        # time kept back for the abort, so that it too happens before the deadline
        self.reserve = min(storage.read_timeout, self.policy.deadline / 4)
        self.failures: list[AttemptInfo] = []
        self.upload_id: str | None = None

    # ----------------------------------------------------------------- the steps
    def run(self) -> Outcome:
        try:
            outcome = self._upload()
        except BaseException:
            self._abort()
            raise
        if not outcome.ok and self.upload_id is not None:
            self._abort()
        return outcome

    def _upload(self) -> Outcome:
        step = self._step("create", 0, lambda client: client.create_multipart_upload(
            Bucket=self.storage.bucket_name, Key=self.key, **self._args("create")))
        if not step.ok:
            return self._result(step)
        self.upload_id = step.value["UploadId"]
        parts = []
        for number, offset in enumerate(range(0, self.payload.size, self.chunk), start=1):
            if self.clock() >= self.ends_at - self.reserve:
                return self._out_of_time(number)
            body = self.payload.read_range(offset, self.chunk)
            step = self._step(f"part {number}", len(body), self._send_part(number, body))
            if not step.ok:
                return self._result(step)
            parts.append(self._part_entry(number, step.value))
        step = self._step("complete", 0, self._complete(parts))
        if step.ok:
            self.upload_id = None
        return self._result(step)

    def _send_part(self, number: int, body: bytes):
        def send(client):
            return client.upload_part(Bucket=self.storage.bucket_name, Key=self.key,
                                      UploadId=self.upload_id, PartNumber=number, Body=body,
                                      **self._args("part"))
        return send

    def _complete(self, parts: list[dict]):
        tries = []

        def complete(client):
            tries.append(1)
            try:
                return client.complete_multipart_upload(
                    Bucket=self.storage.bucket_name, Key=self.key, UploadId=self.upload_id,
                    MultipartUpload={"Parts": parts}, **self._args("complete"))
            except ClientError as exc:
                if len(tries) > 1 and exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    return self._completed_before(client, exc)
                raise
        return complete

    def _completed_before(self, client, exc: ClientError):
        """An earlier complete whose answer was lost did finish: the object is there, whole."""
        head = client.head_object(Bucket=self.storage.bucket_name, Key=self.key)
        if head["ContentLength"] != self.payload.size:
            raise exc
        return head

    def _abort(self) -> None:
        if self.upload_id is None:
            return
        left = max(self.ends_at - self.clock(), self.reserve)
        policy = dataclasses.replace(self.policy, deadline=left, attempt_budget=0.0)
        timeouts = self._timeouts(0, self.clock() + left)
        outcome = call_with_retries(
            lambda: self._client(timeouts).abort_multipart_upload(
                Bucket=self.storage.bucket_name, Key=self.key, UploadId=self.upload_id),
            policy, timeouts=timeouts)
        if outcome.ok:
            self.upload_id = None
            return
        logger.error("multipart upload %s of %s could not be aborted (%s); remove it with "
                     "AbortMultipartUpload or a lifecycle rule", self.upload_id, self.key,
                     outcome.classification.code,
                     extra={"event": "multipart_abort_failed", "upload_id": self.upload_id,
                            "error_code": outcome.classification.code})

    # ----------------------------------------------------------------- one request, retried
    def _step(self, name: str, size: int, send) -> Outcome:
        ends_at = self.ends_at - self.reserve
        timeouts = self._timeouts(size, ends_at)
        left = max(ends_at - self.clock(), 0.0)
        policy = dataclasses.replace(
            self.policy, deadline=left,
            attempt_budget=min(timeouts.current, self.policy.attempt_budget))
        outcome = call_with_retries(lambda: send(self._client(timeouts)), policy,
                                    guard=self.storage.breaker, listener=self.listener,
                                    timeouts=timeouts)
        for info in outcome.attempts:
            info.step = name
        self.failures += [info for info in outcome.attempts if info.code != "OK"]
        return outcome

    def _timeouts(self, size: int, ends_at: float) -> AttemptTimeouts:
        rule = self.storage.timeout_rule
        if not size:  # create, complete and abort carry no payload: the read timeout
            rule = dataclasses.replace(rule, floor=max(rule.floor, self.storage.read_timeout))
        return AttemptTimeouts(rule, size, ends_at=ends_at, clock=self.clock)

    def _client(self, timeouts: AttemptTimeouts):
        return self.storage.clients.client(timeouts.current)

    def _args(self, step: str) -> dict:
        if step == "create":
            return {k: v for k, v in self.params.items() if k not in CREATE_BLOCKLIST}
        allowed = UploadSubmissionTask.UPLOAD_PART_ARGS if step == "part" \
            else UploadSubmissionTask.COMPLETE_MULTIPART_ARGS
        return {k: v for k, v in self.params.items() if k in allowed}

    def _part_entry(self, number: int, response: dict) -> dict:
        entry = {"ETag": response["ETag"], "PartNumber": number}
        algorithm = self.params.get("ChecksumAlgorithm")
        member = f"Checksum{algorithm.upper()}" if algorithm else ""
        if member in response:
            entry[member] = response[member]
        return entry

    # ----------------------------------------------------------------- the save's outcome
    def _result(self, last: Outcome) -> Outcome:
        attempts = list(self.failures)
        if last.ok:
            attempts.append(last.attempts[-1])
        for number, info in enumerate(attempts, start=1):
            info.number = number
        return Outcome(value=last.value, error=last.error, classification=last.classification,
                       attempts=attempts, duration_ms=(self.clock() - self.started) * 1000)

    def _out_of_time(self, part: int) -> Outcome:
        error = TimeoutError(f"multipart upload of {self.key!r} reached its deadline "
                             f"before part {part}")
        return Outcome(error=error, classification=classify(error),
                       attempts=list(self.failures),
                       duration_ms=(self.clock() - self.started) * 1000)
