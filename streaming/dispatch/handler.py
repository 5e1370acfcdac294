"""One Kafka record in, its outputs out: parse, infer each image, route to results or the DLQ."""

from __future__ import annotations

import asyncio
import time

from schemas import DispatcherIdentity, ErrorEnvelope, InferRequest, InvalidMessage, decode_image_messages
from streaming.dispatch.client import Failure, InferenceClient
from streaming.dispatch.outcome import Verdict
from streaming.dispatch.records import KafkaInput, Output, build_dead_letter, build_result


def _now_ms() -> int:
    return int(time.time() * 1000)


class Dispatcher:
    def __init__(self, client: InferenceClient, team: str, identity: DispatcherIdentity) -> None:
        self.client = client
        self.team = team
        self.identity = identity

    async def handle(self, record: KafkaInput) -> list[Output]:
        """Every record yields outputs for exactly one place per image it names; it never raises for bad input."""
        try:
            messages = decode_image_messages(record.value or b"")
        except InvalidMessage as exc:
            error = ErrorEnvelope(stage=exc.stage, type=f"invalid_{exc.stage}", message=exc.message,
                                  retryable=False, attempts=0)
            return [build_dead_letter(record, self.team, error, self.identity, _now_ms())]
        outcomes = await asyncio.gather(*(
            self.client.infer(InferRequest(bucket=m.bucket, key=m.key, model_tag=m.model_tag)) for m in messages
        ))
        outputs = []
        for index, (msg, outcome) in enumerate(zip(messages, outcomes)):
            if isinstance(outcome, Failure):
                o = outcome.outcome
                error = ErrorEnvelope(
                    stage=o.stage, type=o.type, message=o.message, http_status=o.http_status,
                    retryable=o.verdict is Verdict.RETRYABLE, attempts=outcome.attempts,
                    first_attempt_ms=outcome.first_attempt_ms, last_attempt_ms=outcome.last_attempt_ms,
                )
                outputs.append(build_dead_letter(record, self.team, error, self.identity, _now_ms()))
            else:
                outputs.append(build_result(msg, record, index, self.team, outcome.response, outcome.http_ms,
                                            outcome.attempts, _now_ms()))
        return outputs
