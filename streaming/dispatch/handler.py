"""One Kafka record in, its outputs out: parse, infer each image, route to results or the DLQ.

`Dispatcher.handle` is where the poison-pill rule lives on the dispatcher's side: whatever a record holds, it
yields outputs (never an exception, which would fail the job and replay the same record forever), and every
output fits in one Kafka record.
"""

from __future__ import annotations

import asyncio
import logging
import time

from schemas import DispatcherIdentity, ErrorEnvelope, InferRequest, InvalidMessage, decode_image_messages, limits
from streaming.dispatch.client import Failure, InferenceClient, Success
from streaming.dispatch.metrics import DispatcherMetrics
from streaming.dispatch.outcome import Verdict
from streaming.dispatch.records import KafkaInput, Output, build_dead_letter, build_result, infer_request, record_budget

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Dispatcher:
    def __init__(
        self,
        client: InferenceClient,
        team: str,
        identity: DispatcherIdentity,
        max_message_bytes: int = limits.MAX_MESSAGE_BYTES,
        max_record_bytes: int = limits.KAFKA_MAX_RECORD_BYTES,
        in_flight: int = 64,
        metrics: DispatcherMetrics | None = None,
    ) -> None:
        self.client = client
        self.metrics = metrics or DispatcherMetrics()
        self.metrics.breaker = getattr(client, "breaker", None)
        self.team = team
        self.identity = identity
        self.max_message_bytes = max_message_bytes
        self.max_record_bytes = max_record_bytes
        self.in_flight = in_flight
        self._slots: asyncio.Semaphore | None = None  # made in the loop that awaits it

    async def handle_group(self, records: list[KafkaInput]) -> list[Output]:
        """Every record of a group handled on its own, at once (within the in-flight limit); outputs flattened."""
        per_record = await asyncio.gather(*(self.handle(record) for record in records))
        return [output for outputs in per_record for output in outputs]

    async def _infer(self, request: InferRequest) -> Success | Failure:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.in_flight)
        async with self._slots:  # at most `in_flight` images at the service, however many records are waiting
            self.metrics.call_started()
            outcome = None
            try:
                outcome = await self.client.infer(request)
                return outcome
            finally:
                self.metrics.call_finished(
                    outcome.attempts if outcome is not None else 1,
                    outcome.http_ms if isinstance(outcome, Success) else None,
                )

    async def handle(self, record: KafkaInput) -> list[Output]:
        """Every record yields outputs for exactly one place per image it names; it never raises."""
        try:
            outputs = await self._handle(record)
        except Exception as exc:  # a case nobody foresaw must cost one dead letter, not a job that crash-loops
            log.exception("the dispatcher failed on %s-%d@%d", record.topic, record.partition, record.offset)
            outputs = [
                self._dead_letter(
                    record,
                    ErrorEnvelope(
                        stage="dispatch",
                        type=type(exc).__name__,
                        message=f"the dispatcher failed on this message: {exc}",
                        retryable=True,
                        attempts=0,
                    ),
                )
            ]
        self.metrics.record_handled(len(outputs))
        return outputs

    async def _handle(self, record: KafkaInput) -> list[Output]:
        if record.size_bytes > self.max_message_bytes:
            return [
                self._dead_letter(
                    record,
                    ErrorEnvelope(
                        stage="validate",
                        type="message_too_large",
                        retryable=False,
                        attempts=0,
                        message=f"the record is {record.size_bytes} bytes (key + value + headers); the dispatcher "
                        f"takes at most {self.max_message_bytes} (--max-message-bytes)",
                    ),
                )
            ]
        try:
            messages = decode_image_messages(record.value or b"")
        except InvalidMessage as exc:
            return [
                self._dead_letter(
                    record,
                    ErrorEnvelope(
                        stage=exc.stage, type=f"invalid_{exc.stage}", message=exc.message, retryable=False, attempts=0
                    ),
                )
            ]
        # An S3 event names one image per record: each has its own id and its own result or dead letter, and the
        # replay of one record's dead letter re-processes that record only.
        images = list(enumerate(messages))
        if len(images) > 1 and record.replayed_record is not None and record.replayed_record < len(images):
            images = [images[record.replayed_record]]
        requests = [infer_request(m) for _, m in images]
        # (the common case, one image, without a task of its own: a task per message is a measurable cost)
        outcomes = (
            [await self._infer(requests[0])]
            if len(requests) == 1
            else await asyncio.gather(*(self._infer(request) for request in requests))
        )
        outputs = []
        for (index, msg), outcome in zip(images, outcomes, strict=True):
            event_record = index if len(messages) > 1 else None
            if isinstance(outcome, Failure):
                o = outcome.outcome
                outputs.append(
                    self._dead_letter(
                        record,
                        ErrorEnvelope(
                            stage=o.stage or "dispatch",
                            type=o.type,
                            message=o.message,
                            http_status=o.http_status,
                            retryable=o.verdict is Verdict.RETRYABLE,
                            attempts=outcome.attempts,
                            first_attempt_ms=outcome.first_attempt_ms,
                            last_attempt_ms=outcome.last_attempt_ms,
                        ),
                        event_record=event_record,
                    )
                )
                continue
            result = build_result(
                msg,
                record,
                index,
                self.team,
                outcome.response,
                outcome.http_ms,
                outcome.attempts,
                _now_ms(),
                event_record,
            )
            if result.size_bytes > record_budget(self.max_record_bytes):
                result = self._dead_letter(
                    record,
                    ErrorEnvelope(
                        stage="infer",
                        type="result_too_large",
                        retryable=False,
                        attempts=outcome.attempts,
                        message=f"the result is {result.size_bytes} bytes, over the "
                        f"{record_budget(self.max_record_bytes)} a Kafka record can take (--max-record-bytes)",
                    ),
                    event_record,
                )
            else:
                self.metrics.result()
            outputs.append(result)
        return outputs

    def _dead_letter(self, record: KafkaInput, error: ErrorEnvelope, event_record: int | None = None) -> Output:
        self.metrics.dead_letter(error.stage)
        return build_dead_letter(
            record, self.team, error, self.identity, _now_ms(), self.max_record_bytes, event_record
        )
