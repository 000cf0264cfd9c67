"""The sink as its own process: SIGKILL mid-stream and restart store every record exactly once.

The sink owns its own embedded store (one process per chDB path), so the test reads it the way the
CLI does while a sink runs: through the sink's query endpoint advertised in the lock file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumers.audit_store import EndpointStore, lock_path, running_sink
from schemas import AuditRecord, TopicNames
from streams.runtime.outcomes import outcome_record
from tests.consumers.kafka_io import create_topics, publish
from tests.consumers.test_audit_sink import workload

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
RECORDS = 20_000


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    """Poll another process's observable state until ``check`` holds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class SinkProcess:
    """``python -m consumers.audit_sink`` on its own chDB path."""

    def __init__(self, url: str, bootstrap: str, prefix: str) -> None:
        self.url, self.argv = url, [
            sys.executable, "-m", "consumers.audit_sink", "--url", url, "--database", "audit",
            "--bootstrap", bootstrap, "--topic-prefix", prefix, "--group", prefix, "--max-rows", "1500"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EndpointStore:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        pid, lock = self.process.pid, lock_path(self.url)
        assert lock is not None
        wait_until(lambda: lock.exists() and json.loads(lock.read_text() or "{}").get("pid") == pid,
                   "the sink's query endpoint")
        endpoint = running_sink(self.url)
        assert endpoint is not None
        return endpoint

    def signal(self, sig: signal.Signals) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)


@pytest.fixture
def sink_process(tmp_path: Path, kafka_bootstrap: str, unique_name: str) -> Iterator[SinkProcess]:
    sink = SinkProcess(f"chdb://{tmp_path / 'audit'}", kafka_bootstrap, unique_name)
    yield sink
    if sink.process is not None and sink.process.poll() is None:
        sink.process.kill()
        sink.process.wait()


def _count(store: EndpointStore, sql: str) -> int:
    return int(store.query(sql).rows[0][0])


async def test_sigkill_mid_batch_then_restart_stores_every_record_once(
    sink_process: SinkProcess, kafka_bootstrap: str, unique_name: str,
) -> None:
    topics = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, topics)
    records = workload(RECORDS * 2 // 3)
    await publish(kafka_bootstrap, topics, records)

    store = sink_process.start()
    wait_until(lambda: _count(store, "SELECT count() FROM audit.audit_events") > 0, "the first batch")
    assert sink_process.signal(signal.SIGKILL) == -signal.SIGKILL

    store = sink_process.start()
    wait_until(lambda: _count(store, "SELECT count() FROM audit.audit_events FINAL") >= len(records),
               "every record after the restart")
    final = _count(store, "SELECT count() FROM audit.audit_events FINAL")
    distinct = _count(store, "SELECT uniqExact(event_id) FROM audit.audit_events")
    raw = _count(store, "SELECT count() FROM audit.audit_events")
    ids = {row[0] for row in store.query("SELECT event_id FROM audit.audit_events FINAL").rows}

    expected = {r.event_id if isinstance(r, AuditRecord) else outcome_record(r).event_id for r in records}
    assert final == distinct == len(records)
    assert ids == expected
    assert raw >= len(records)  # a batch re-read after the kill may be stored twice; FINAL shows it once
    assert sink_process.signal(signal.SIGTERM) == 0
    assert running_sink(sink_process.url) is None
