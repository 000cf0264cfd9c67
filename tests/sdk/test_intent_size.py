"""An intent over the size limit is refused by the SDK (InvalidIntent), never sent, and never counted as
the processor being down: the breaker stays closed and the next call goes through."""

from __future__ import annotations

import pytest

from infra.kafka.admin import TopicSpec, ensure_topics
from schemas import Decision, DecisionKind, Intent, TopicNames
from schemas.intent import MAX_INTENT_BYTES
from sluicegate import CircuitBreaker, Gate, InvalidIntent, Settings
from sluicegate.breaker import BreakerState
from tests.sdk.kafka_helpers import PARTITIONS, Responder, create_topics
from tests.sdk.test_kafka_integration import REFUND, answer

pytestmark = pytest.mark.integration


def allow_all(intent: Intent) -> list[Decision]:
    return [answer(intent, DecisionKind.ALLOW)]


def gate_for(bootstrap: str, topics: TopicNames, **settings: object) -> Gate:
    """A gate whose breaker opens on the first failure it is told of."""
    options = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=topics.prefix, decision_timeout_s=10)
    return Gate(options.model_copy(update=settings),
                agent_id="sup-1", agent_role="support", environment="production",
                breaker=CircuitBreaker(failure_threshold=1))


async def refused_then_allowed(gate: Gate, responder: Responder, labels: dict[str, str]) -> str:
    """The oversized call's refusal; a normal call after it is sent and allowed."""
    with pytest.raises(InvalidIntent) as refused:
        await gate.check(**REFUND, params={"amount": 1}, labels=labels)
    assert gate.breaker.state is BreakerState.CLOSED
    decision = await gate.check(**REFUND, params={"amount": 1})
    assert decision.decision is DecisionKind.ALLOW
    assert [intent.labels for intent in responder.seen] == [{}], "only the normal intent reached the topic"
    return str(refused.value)


@pytest.mark.parametrize("size", [MAX_INTENT_BYTES, 2 << 20], ids=["over-worker-cap", "over-broker-cap"])
async def test_an_oversized_intent_is_refused_locally(
    kafka_bootstrap: str, unique_name: str, size: int,
) -> None:
    topics = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, topics)
    async with (
        Responder(kafka_bootstrap, topics, allow_all) as responder,
        gate_for(kafka_bootstrap, topics) as gate,
    ):
        message = await refused_then_allowed(gate, responder, {"blob": "x" * size})
    assert f"the limit is {MAX_INTENT_BYTES}" in message and "nothing was sent" in message


async def test_the_limit_comes_from_settings(kafka_bootstrap: str, unique_name: str) -> None:
    topics = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, topics)
    async with (
        Responder(kafka_bootstrap, topics, allow_all) as responder,
        gate_for(kafka_bootstrap, topics, max_intent_bytes=4096) as gate,
    ):
        message = await refused_then_allowed(gate, responder, {"blob": "x" * 5000})
    assert "the limit is 4096" in message


async def test_a_topic_with_a_smaller_limit_refuses_the_intent_not_the_processor(
    kafka_bootstrap: str, unique_name: str,
) -> None:
    topics = TopicNames(unique_name)
    small = {"max.message.bytes": "20000"}
    await ensure_topics(kafka_bootstrap, [TopicSpec(topics.intents, PARTITIONS, configs=small)])
    await create_topics(kafka_bootstrap, topics)
    async with (
        Responder(kafka_bootstrap, topics, allow_all) as responder,
        gate_for(kafka_bootstrap, topics) as gate,
    ):
        message = await refused_then_allowed(gate, responder, {"blob": "x" * 40_000})
    assert "max.message.bytes" in message
