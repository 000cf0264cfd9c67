"""The hash-chained audit's costs: chaining in the worker, and ``audit verify``'s speed.

``python bench/audit_chain.py --json`` prints one JSON line:

- ``chain_us_per_record``: what :class:`streams.audit_chain.AuditChain` adds per audit record in the
  worker (the row, its canonical hash, the outbox write and the send), beside ``dump_us_per_record``, its
  floor: serialising the same record once (what every worker pays anyway); best of ``--repeat``.
- ``verify_rows_per_s``: ``audit verify`` over ``--rows`` chained records stored in a fresh embedded
  ClickHouse, in ``--chains`` chains (one per stage partition), beside ``scan_rows_per_s``, its floor:
  reading the same columns with one plain query.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consumers.audit_columns import COLUMNS, HASHED, row
from consumers.audit_rows import arrow_stream, to_arrow
from consumers.audit_store import ClientStore
from consumers.audit_verify import Verifier, _select
from infra.clickhouse import open_client
from infra.clickhouse.migrate import migrate
from schemas import AuditRecord, DecisionKind
from sluicegate.trust import RequestSigner
from streams.audit_chain import AuditChain
from streams.stages.outputs import audit_send
from streams.state.changelog_store import ChangelogStore
from tests.consumers.records import decision_record, intent


def _records(count: int, at: datetime) -> list[AuditRecord]:
    return [decision_record(intent(at + timedelta(milliseconds=n), agent=f"agent-{n % 50}", amount=n % 700),
                            DecisionKind.ALLOW, risk=0.25, factors={"amount": 0.25}) for n in range(count)]


def _chain(records: list[AuditRecord], chains: int, work: Path,
           signer: RequestSigner) -> tuple[list[bytes], float]:
    """Chain ``records`` round-robin over ``chains`` partitions; the values sent and the seconds spent."""
    store = ChangelogStore(work, "bench-agent-state-changelog")
    chain = AuditChain(store, signer)
    sent: list[bytes] = []
    for partition in range(chains):
        store.open(partition)
        store.use(partition)
        chain.took_over(partition)
    started = time.perf_counter()
    for index, record in enumerate(records):
        partition = index % chains
        store.use(partition)
        sent += [s.value for s in chain.route(partition, [audit_send(record)])]
        if index % 500 == 499:  # the runner's commit: flush, then the outbox's next step
            for p in range(chains):
                store.use(p)
                chain.flushed(p)
            store.take_writes()
    elapsed = time.perf_counter() - started
    chain.interval_s = 0.0  # the last checkpoint of each chain, as an idle worker's tick signs it
    for p in range(chains):
        store.use(p)
        chain.flushed(p)
        sent += [s.value for s in chain.route(p, [])]
    store.close_all()
    return sent, elapsed


def _dump(records: list[AuditRecord]) -> float:
    started = time.perf_counter()
    for record in records:
        audit_send(record)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chains", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    signer = RequestSigner.generate()
    records = _records(args.rows, datetime.now(UTC) - timedelta(days=1))
    sample = records[: min(len(records), 20_000)]
    chain_s, dump_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(args.repeat):
            dump_s.append(_dump(sample))
            chain_s.append(_chain(sample, args.chains, Path(tmp) / f"c{attempt}", signer)[1])
        sent, _ = _chain(records, args.chains, Path(tmp) / "all", signer)
        client = open_client(f"chdb://{tmp}/ch")
        migrate(client, "bench")
        rows = [row(AuditRecord.model_validate_json(value), ("bench", 0, n)) for n, value in enumerate(sent)]
        for start in range(0, len(rows), 25_000):
            client.raw_insert("bench.audit_events", list(COLUMNS),
                              arrow_stream([to_arrow(rows[start:start + 25_000])]), fmt="ArrowStream")
        store = ClientStore(client)
        verify_s, scan_s = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            found = Verifier(store, "bench", signer.public).run()
            verify_s.append(time.perf_counter() - started)
            assert found.ok and found.records == args.rows, found.problems
            started = time.perf_counter()
            store.query(f"SELECT chain_seq, chain_prev, {', '.join(_select(c) for c in HASHED)} "
                        "FROM bench.audit_events WHERE chain_id != '' ORDER BY chain_id, chain_seq")
            scan_s.append(time.perf_counter() - started)
    result: dict[str, Any] = {
        "rows": args.rows, "chains": args.chains,
        "chain_us_per_record": round(min(chain_s) / len(sample) * 1e6, 1),
        "dump_us_per_record": round(min(dump_s) / len(sample) * 1e6, 1),
        "verify_rows_per_s": round(args.rows / min(verify_s)),
        "scan_rows_per_s": round(args.rows / min(scan_s)),
        "verify_passes_s": [round(s, 2) for s in verify_s],
        "load": os.getloadavg()[0],
    }
    result["chain_vs_dump"] = round(statistics.median(c / d for c, d in zip(chain_s, dump_s, strict=True)), 2)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
