"""``audit verify`` on the real engine: chains written by :class:`streams.audit_chain.AuditChain` over a
real table verify, and each kind of tampering in ClickHouse is found and named."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from consumers.audit_store import ClientStore
from consumers.audit_verify import Problem, Verification, Verifier
from schemas import AuditRecord, DecisionKind
from sluicegate.trust import RequestSigner
from streams.audit_chain import AuditChain
from streams.stages.outputs import audit_send
from streams.state.changelog_store import ChangelogStore
from tests.consumers.conftest import Store
from tests.consumers.records import approval_requested, decision_record, intent, verdict_accepted

pytestmark = pytest.mark.integration
SIGNER = RequestSigner.generate()
RECORDS = 12
EVERY = 4


def _records(start: datetime) -> list[AuditRecord]:
    """Decisions, approval requests and verdicts with every kind of column (maps, arrays, micro-
    seconds that ClickHouse keeps as ms)."""
    made: list[AuditRecord] = []
    for n in range(RECORDS // 3):
        asked = intent(start + timedelta(seconds=n, microseconds=123_456), agent=f"agent-{n % 2}")
        asked = asked.model_copy(update={"labels": {"team": "support", "ticket": str(n)}})
        made.append(decision_record(asked, DecisionKind.REQUIRE_APPROVAL, risk=0.1 * n, rules=("r1", "r2"),
                                    determining=("r2",), factors={"amount": 0.25, "hour": 0.125}))
        made.append(approval_requested(asked))
        made.append(verdict_accepted(asked, timedelta(minutes=2)))
    return made


def _chain(tmp: Path, records: list[AuditRecord]) -> list[AuditRecord]:
    """The records as a worker sends them: chained one at a time, flushed, checkpointed every 4."""
    store = ChangelogStore(tmp / "table", "test-agent-state-changelog")
    store.open(0)
    store.use(0)
    chain = AuditChain(store, SIGNER, every=EVERY, interval_s=3600)
    sent = chain.took_over(0)
    for record in records:
        sent += chain.route(0, [audit_send(record)])
        chain.flushed(0)
    sent += chain.route(0, [])
    store.close_all()
    return [AuditRecord.model_validate_json(send.value) for send in sent]


@pytest.fixture
def chained(tmp_path: Path, store_records: Store) -> Iterator[list[AuditRecord]]:
    """A chain of :data:`RECORDS` records and its checkpoints, stored."""
    sent = _chain(tmp_path, _records(datetime.now(UTC) - timedelta(hours=2)))
    store_records(sent)
    yield [record for record in sent if record.chain is not None]


def _verify(store: ClientStore, db: str, key: str | None = SIGNER.public) -> Verification:
    return Verifier(store, db, key).run()


def _mutate(client: Client, sql: str) -> None:
    client.command(sql, settings={"mutations_sync": 2})


def test_an_intact_chain_verifies(
    chained: list[AuditRecord], audit_store: ClientStore, audit_db: str,
) -> None:
    found = _verify(audit_store, audit_db)
    assert found.ok, found.problems
    assert (found.chains, found.records, found.checkpoints) == (1, RECORDS, RECORDS // EVERY)
    assert [r.chain.seq for r in chained if r.chain] == list(range(1, RECORDS + 1))


def test_a_checkpoint_signed_by_another_key_fails(
    chained: list[AuditRecord], audit_store: ClientStore, audit_db: str,
) -> None:
    found = _verify(audit_store, audit_db, RequestSigner.generate().public)
    assert not found.ok
    assert "signature does not verify" in str(found.problems[0])


def test_an_edited_decision_is_named(
    chained: list[AuditRecord], audit_store: ClientStore, audit_db: str, clickhouse_client: Client,
) -> None:
    victim = chained[4]
    _mutate(clickhouse_client, f"ALTER TABLE {audit_db}.audit_events UPDATE decision = 'ALLOW' "
                               f"WHERE event_id = '{victim.event_id}'")
    problem = _single(_verify(audit_store, audit_db))
    assert (problem.seq, problem.event_id) == (5, victim.event_id)
    assert problem.what.startswith("edited")


def test_a_deleted_row_is_named(
    chained: list[AuditRecord], audit_store: ClientStore, audit_db: str, clickhouse_client: Client,
) -> None:
    _mutate(clickhouse_client, f"ALTER TABLE {audit_db}.audit_events DELETE "
                               f"WHERE event_id = '{chained[6].event_id}'")
    problem = _single(_verify(audit_store, audit_db))
    assert problem.seq == 7
    assert "missing (deleted) after event " + chained[5].event_id in problem.what


def test_a_forged_row_inserted_is_named(
    chained: list[AuditRecord], audit_store: ClientStore, audit_db: str, store_records: Store,
) -> None:
    genuine = chained[2]
    assert genuine.decision is None and genuine.verdict is not None
    forged = genuine.model_copy(update={"event_id": genuine.event_id + ":forged", "note": "approved, honest"})
    store_records([forged])
    problem = _single(_verify(audit_store, audit_db))
    assert (problem.seq, problem.event_id) == (3, forged.event_id)
    assert "forged row" in problem.what


def test_two_swapped_rows_are_named(
    chained: list[AuditRecord], audit_store: ClientStore, audit_db: str, clickhouse_client: Client,
    store_records: Store,
) -> None:
    """Rows 8 and 9 trade places (their sequence numbers, a key column: deleted and stored again)."""
    first, second = chained[7], chained[8]
    _mutate(clickhouse_client, f"ALTER TABLE {audit_db}.audit_events DELETE "
                               f"WHERE event_id IN ('{first.event_id}', '{second.event_id}')")
    assert first.chain is not None and second.chain is not None
    store_records([first.model_copy(update={"chain": first.chain.model_copy(update={"seq": 9})}),
                   second.model_copy(update={"chain": second.chain.model_copy(update={"seq": 8})})])
    problem = _single(_verify(audit_store, audit_db))
    assert (problem.seq, problem.event_id) == (8, second.event_id)
    assert "does not follow" in problem.what


def test_the_newest_rows_dropped_are_found(
    chained: list[AuditRecord], audit_store: ClientStore, audit_db: str, clickhouse_client: Client,
) -> None:
    _mutate(clickhouse_client, f"ALTER TABLE {audit_db}.audit_events DELETE "
                               f"WHERE chain_seq > 9 AND event_type != 'checkpoint'")
    problem = _single(_verify(audit_store, audit_db))
    assert problem.seq == 10
    assert f"records 10 to {RECORDS} are missing" in problem.what
    assert chained[8].event_id in problem.what


def test_a_tail_no_checkpoint_covers_is_a_gap(
    tmp_path: Path, audit_store: ClientStore, audit_db: str, store_records: Store,
) -> None:
    """A chain that stopped without a checkpoint: its last records are unproven."""
    sent = _chain(tmp_path, _records(datetime.now(UTC) - timedelta(hours=2))[:RECORDS - 2])
    store_records(sent)
    problem = _single(_verify(audit_store, audit_db))
    assert problem.seq == 9 and "covered by no checkpoint" in problem.what


def test_a_forged_duplicate_stored_later_does_not_replace_the_original(
    chained: list[AuditRecord], audit_store: ClientStore, audit_db: str, store_records: Store,
    clickhouse_client: Client,
) -> None:
    genuine = chained[3]
    assert genuine.decision is not None
    forged = genuine.model_copy(update={"decision": genuine.decision.model_copy(
        update={"decision": DecisionKind.ALLOW})})
    store_records([forged])
    clickhouse_client.command(f"OPTIMIZE TABLE {audit_db}.audit_events FINAL")
    kept = clickhouse_client.query(f"SELECT decision FROM {audit_db}.audit_events FINAL "
                                   f"WHERE event_id = '{genuine.event_id}'").result_rows
    assert kept == [("REQUIRE_APPROVAL",)]
    assert _verify(audit_store, audit_db).ok
    unchained = forged.model_copy(update={"chain": None})
    store_records([unchained])
    problem = _single(_verify(audit_store, audit_db))
    assert problem.event_id == genuine.event_id and "forged duplicate" in problem.what


def _single(found: Verification) -> Problem:
    assert not found.ok
    assert len(found.problems) == 1, found.problems
    return found.problems[0]
