"""Reply partitions, pure logic (docs/replies.md): the reply key reaches its partition, the lease log's
rule (first ``sharing`` live claims by rank hold a partition), where the worker sends a decision, and the
intent's bytes without a reply key unchanged."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from infra.kafka.acls import Operation, matrix
from schemas import Decision, DecisionKind, Intent, TopicNames
from schemas.decision import REQUEST_ID_REUSED, UNAUTHENTICATED, WRONG_PARTITION
from sluicegate.replies import LeaseBook, ReplyLeaseClaim, lease_key, reply_key_for
from sluicegate.routing import partition_for
from sluicegate.trust import AUTH_HEADER, KeyRing, RequestSigner
from streams.runtime.trust import WorkerTrust
from streams.stages.outputs import Route, answer_send, approval_final_sends, publish_sends
from streams.topology import WorkerTopics
from tests.streams.harness import make_intent

TTL = 1_000


def claim(book: LeaseBook, offset: int, partition: int, holder: str, at_ms: int = 0,
          since: int | None = None) -> None:
    value = ReplyLeaseClaim(partition=partition, holder=holder, ttl_ms=TTL, since=since)
    book.apply(offset, at_ms, lease_key(partition, holder), value.model_dump_json().encode())


@pytest.mark.parametrize("partitions", [1, 7, 12, 1000])
def test_the_reply_key_of_a_partition_is_put_on_it_by_the_default_partitioner(partitions: int) -> None:
    for partition in {0, partitions // 2, partitions - 1}:
        assert partition_for(reply_key_for(partition, partitions), partitions) == partition


def test_no_reply_key_for_a_partition_the_topic_does_not_have() -> None:
    with pytest.raises(ValueError):
        reply_key_for(5, 5)


def test_the_first_claims_by_rank_hold_a_partition_up_to_sharing() -> None:
    book = LeaseBook(partitions=4, sharing=2)
    for offset, holder in enumerate(("a", "b", "c")):
        claim(book, offset, 1, holder)
    assert book.holders(1, at_ms=10) == ["a", "b"]
    assert not book.holds(1, "c", at_ms=10)


def test_a_renewal_keeps_the_rank_of_the_first_claim() -> None:
    book = LeaseBook(partitions=4, sharing=1)
    claim(book, 0, 2, "a")
    claim(book, 1, 2, "b")
    claim(book, 2, 2, "a", at_ms=500, since=0)  # a renews after b claimed
    assert book.holders(2, at_ms=600) == ["a"]


def test_an_expired_or_released_claim_frees_its_place() -> None:
    book = LeaseBook(partitions=4, sharing=1)
    claim(book, 0, 3, "a", at_ms=0)
    claim(book, 1, 3, "b", at_ms=10)
    assert book.holders(3, at_ms=TTL - 1) == ["a"]
    assert book.holders(3, at_ms=TTL + 1) == ["b"]  # a expired
    book.apply(2, 20, lease_key(3, "b"), None)
    assert book.holders(3, at_ms=TTL + 1) == []


def test_records_that_are_not_claims_of_this_topic_are_skipped() -> None:
    book = LeaseBook(partitions=2, sharing=1)
    book.apply(0, 0, b"0/x", b"not json")
    foreign = ReplyLeaseClaim(partition=5, holder="x", ttl_ms=TTL).model_dump_json().encode()
    book.apply(1, 0, lease_key(5, "x"), foreign)
    mislabelled = ReplyLeaseClaim(partition=0, holder="x", ttl_ms=TTL).model_dump_json().encode()
    book.apply(2, 0, lease_key(1, "y"), mislabelled)
    assert book.skipped == 3 and book.load(0) == [0, 0]


def test_pick_takes_a_least_held_partition_and_none_when_full() -> None:
    book = LeaseBook(partitions=3, sharing=2)
    claim(book, 0, 0, "a")
    claim(book, 1, 1, "b")
    assert book.pick(0, random.Random(1)) == 2
    claim(book, 2, 2, "c")
    assert book.pick(0, random.Random(1), avoid=frozenset({0, 1})) == 2
    for offset, (partition, holder) in enumerate([(0, "d"), (1, "e"), (2, "f")], start=3):
        claim(book, offset, partition, holder)
    assert book.pick(0, random.Random(1)) is None


def decision_of(intent: Intent, determining: tuple[str, ...] = ("small",)) -> Decision:
    return Decision(request_id=intent.request_id, agent_id=intent.agent_id, decision=DecisionKind.ALLOW,
                    final=True, reasons=("r",), rules=("small",), determining=determining,
                    policy_version="v", policy_name="p", decided_at=datetime.now(UTC))


def test_a_decision_goes_to_the_reply_key_its_intent_names() -> None:
    intent = make_intent("a-1", reply_key="r3.0")
    send = publish_sends(intent, decision_of(intent))[0]
    assert (send.route, send.key) == (Route.REPLIES, b"r3.0")
    assert send.agent is not None


@pytest.mark.parametrize("marker", [UNAUTHENTICATED, WRONG_PARTITION])
def test_a_refused_intents_reply_key_is_not_honoured(marker: str) -> None:
    intent = make_intent("a-1", reply_key="r3.0")
    send = answer_send(intent, decision_of(intent, (marker,)), b"{}")
    assert (send.route, send.key) == (Route.DECISIONS, b"a-1")


def test_a_reused_request_id_is_answered_on_the_reply_key() -> None:
    intent = make_intent("a-1", reply_key="r3.0")
    assert answer_send(intent, decision_of(intent, (REQUEST_ID_REUSED,)), b"{}").route is Route.REPLIES


def test_without_a_reply_key_the_decision_goes_where_it_always_went() -> None:
    intent = make_intent("a-1")
    assert "reply_key" not in intent.model_dump_json()  # the bytes of older clients' intents unchanged
    send = publish_sends(intent, decision_of(intent))[0]
    assert (send.route, send.key) == (Route.DECISIONS, b"a-1")
    assert answer_send(None, decision_of(intent), b"{}").route is Route.DECISIONS


def test_the_worker_authenticates_a_reply_with_the_agents_key() -> None:
    intent = make_intent("a-1", reply_key="r3.0")
    send = publish_sends(intent, decision_of(intent))[0]
    trust = WorkerTrust(KeyRing.generate("k1"), RequestSigner.generate(), 3)
    assert [name for name, _ in trust.seal(send)] == [AUTH_HEADER]


def test_the_workers_create_the_replies_and_lease_topics_and_route_replies() -> None:
    topics = WorkerTopics(TopicNames("p"), 6, reply_partitions=40)
    specs = {spec.name: spec for spec in topics.specs()}
    assert specs["p.replies"].partitions == 40
    assert specs["p.reply-leases"].partitions == 1
    assert specs["p.reply-leases"].configs["cleanup.policy"] == "compact"
    assert topics.routes()[Route.REPLIES] == "p.replies"


def test_only_workers_write_replies_and_agents_read_them_and_hold_leases() -> None:
    def who(topic: str, operation: Operation) -> set[str]:
        return {a.principal for a in matrix("p") if a.name == topic and a.operation is operation}

    writers, readers = who("p.replies", Operation.WRITE), who("p.replies", Operation.READ)
    leasers = who("p.reply-leases", Operation.WRITE)
    assert (writers, readers, leasers) == ({"User:worker"}, {"User:agent"}, {"User:agent"})


def test_an_approvals_final_decision_goes_to_the_same_reply_key() -> None:
    intent = make_intent("a-1", reply_key="r3.0")
    sends = approval_final_sends(intent, decision_of(intent))
    assert (sends[0].route, sends[0].key) == (Route.REPLIES, b"r3.0")
    assert sends[-1].route is Route.APPROVAL_RESULTS
