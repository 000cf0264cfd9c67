"""What each deciding stage does with one record it reads (run by
:class:`streams.runtime.runner.StageRunner`).

Thin adapters: parse the internal message, call the stage, count the outcome in the metrics. An
exception is handled by the runner (the record goes to the dead-letter topic with the error).
"""

from __future__ import annotations

from typing import Any

from aiokafka.structs import ConsumerRecord

from streams.messages import Count, Feedback, Forward, Release, Resolved, kind_of
from streams.metrics import Metrics
from streams.policy_source import PolicySource
from streams.runtime.runner import Handler
from streams.stages.decide import DecideStage
from streams.stages.outputs import Send, now_ms
from streams.stages.shared import SharedStage


def agent_handler(stage: DecideStage, intents: str, policies: PolicySource, metrics: Metrics) -> Handler:
    """Stage 1: an intent (``intents`` topic), or a feedback / resolved message for one it forwarded."""

    def handle(record: ConsumerRecord[Any, Any]) -> list[Send]:
        partition, body = record.partition, record.value
        if record.topic == intents:
            outcome = stage.handle_intent(body, record.key, policies.current, partition, now_ms(),
                                          record.timestamp)
            metrics.observe(outcome, record.timestamp)
            return outcome.sends
        if kind_of(body) == "resolved":
            return stage.handle_resolved(Resolved.model_validate_json(body), partition, now_ms())
        return stage.handle_feedback(Feedback.model_validate_json(body), partition, now_ms())

    return handle


def shared_handler(stage: SharedStage, policies: PolicySource, metrics: Metrics) -> Handler:
    """Stage 2: a forwarded intent's hop, a release of a reservation, or an approved action's count."""

    def handle(record: ConsumerRecord[Any, Any]) -> list[Send]:
        partition, body = record.partition, record.value
        kind = kind_of(body)
        if kind == "release":
            stage.handle_release(Release.model_validate_json(body), partition, now_ms())
            return []
        if kind == "count":
            return stage.handle_count(Count.model_validate_json(body), partition, now_ms())
        forward = Forward.model_validate_json(body)
        policy = policies.version(forward.stage1.policy_version)
        outcome = stage.handle_forward(forward, policy, partition, now_ms())
        metrics.observe(outcome, record.timestamp)
        return outcome.sends

    return handle
