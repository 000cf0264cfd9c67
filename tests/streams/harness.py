"""Helpers for the processor's integration tests: a worker subprocess and an intent/decision client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.kafka.process import free_port
from schemas import ApprovalRequest, Decision, Intent, TopicNames
from sluicegate.trust import AUTH_HEADER, AgentCredential, KeyRing

Headers = list[tuple[str, bytes]]
ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies" / "examples"
DECISION_TIMEOUT_S = 60.0
START_TIMEOUT_S = 120.0


@dataclass
class WorkerProcess:
    """A ``python -m streams.worker`` subprocess."""

    bootstrap: str
    prefix: str
    workdir: Path
    partitions: int = 3
    web_port: int = field(default_factory=free_port)
    reviewers: Path | None = None
    max_event_skew_s: float = 0.0  # off: the tests stamp their intents on days of their own
    trust: dict[str, str] | None = None
    """The workers' trust settings (SLUICEGATE_TRUST_KEYS, ...); None: trust off."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.prefix)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "worker.log").open("ab")
        argv = [sys.executable, "-m", "streams.worker", "--bootstrap", self.bootstrap,
                "--topic-prefix", self.prefix, "--partitions", str(self.partitions),
                "--workdir", str(self.workdir / "data"), "--web-port", str(self.web_port),
                "--max-event-skew", str(self.max_event_skew_s)]
        if self.reviewers is not None:
            argv += ["--reviewers", str(self.reviewers)]
        trust = self.trust if self.trust is not None else {"SLUICEGATE_TRUST_OFF": "1"}
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **trust})

    def get(self, path: str) -> tuple[int, bytes]:
        """GET a page of the worker's web server."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S, **expect: Any) -> dict[str, Any]:
        """Poll ``/ready`` until it is 200 (or its body has ``expect``); fails if the worker exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            try:
                status, body = await asyncio.to_thread(self.get, "/ready")
                state = dict(json.loads(body))
                if (status == 200 and not expect) or (expect and expect.items() <= state.items()):
                    return state
            except (OSError, ValueError):
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout_s}s\n{self.log_tail()}")

    async def wait_started(self) -> dict[str, Any]:
        """Wait until the worker has partitions assigned (with or without a policy)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            state = await self.wait_ready(max(1.0, deadline - time.monotonic()), ready=False)
            if state["partitions"] or time.monotonic() > deadline:
                return state
            await asyncio.sleep(0.2)

    @contextlib.contextmanager
    def running(self, ready: bool = True) -> Iterator[Self]:
        """Started and ready for the block (``ready=False``: only given its partitions, with or without a
        policy), from synchronous code such as a module fixture; stopped after it, whatever happens."""
        self.start()
        try:
            asyncio.run(self.wait_ready() if ready else self.wait_started())
            yield self
        finally:
            self.stop()

    def kill(self) -> None:
        """SIGKILL: no chance to commit or flush anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def log_tail(self, lines: int = 60) -> str:
        path = self.workdir / "worker.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def make_intent(agent_id: str, **overrides: Any) -> Intent:
    """A valid intent (a small refund unless overridden)."""
    fields: dict[str, Any] = {
        "request_id": uuid.uuid4(), "agent_id": agent_id, "agent_role": "support",
        "environment": "production", "tool": "payments.refund", "action": "create",
        "target": "payments:refunds", "params": {"amount": 10}, "occurred_at": datetime.now(UTC),
    }
    fields.update(overrides)
    return Intent.model_validate(fields)


class Client:
    """Produces intents and collects every decision, approval request, audit record and dead letter of
    one prefix."""

    def __init__(self, bootstrap: str, prefix: str, ring: KeyRing | None = None) -> None:
        self.bootstrap = bootstrap
        self.names = TopicNames(prefix)
        self.ring = ring
        """With trust on: the workers' keys, from which :meth:`send` derives each agent's credential."""
        self.decisions: dict[uuid.UUID, list[Decision]] = defaultdict(list)
        self.decision_records: dict[uuid.UUID, list[tuple[bytes, Headers]]] = defaultdict(list)
        """The value and headers of each decision as published (the workers' authenticators)."""
        self.request_records: dict[uuid.UUID, tuple[bytes, Headers]] = {}
        """The value and headers of each approval request as published."""
        self.dead_letters: list[tuple[bytes, dict[str, bytes]]] = []
        self.audit: list[dict[str, Any]] = []
        self.requests: dict[uuid.UUID, ApprovalRequest] = {}
        self._arrived = asyncio.Event()
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")  # as the SDK
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                          auto_offset_reset="earliest", fetch_max_wait_ms=50)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        n = self.names
        topics = [n.decisions, n.dead_letter, n.audit, n.approval_requests]
        parts = []
        for topic in topics:
            for _ in range(200):
                found = self._consumer.partitions_for_topic(topic)
                if found:
                    break
                await self._consumer._client.force_metadata_update()
                await asyncio.sleep(0.05)
            assert found, f"topic {topic} missing"
            parts += [TopicPartition(topic, p) for p in found]
        self._consumer.assign(parts)
        await self._consumer.seek_to_beginning(*parts)
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    if tp.topic == self.names.decisions:
                        decision = Decision.model_validate_json(record.value)
                        self.decisions[decision.request_id].append(decision)
                        self.decision_records[decision.request_id].append(
                            (record.value, list(record.headers)))
                    elif tp.topic == self.names.audit:
                        self.audit.append(json.loads(record.value))
                    elif tp.topic == self.names.approval_requests:
                        request = ApprovalRequest.model_validate_json(record.value)
                        self.requests[request.request_id] = request
                        self.request_records[request.request_id] = (record.value, list(record.headers))
                    else:
                        self.dead_letters.append((record.value, dict(record.headers)))
            if batches:
                self._arrived.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()
        await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def send(self, intent: Intent) -> None:
        """Produce ``intent`` as its agent's SDK would (authenticated when the client has a ring)."""
        value = intent.model_dump_json().encode()
        await self.send_raw(intent.agent_id.encode(), value, self._headers(intent, value))

    def _headers(self, intent: Intent, value: bytes) -> Headers | None:
        if self.ring is None:
            return None
        credential = AgentCredential.issue(self.ring, intent.agent_id, intent.agent_role, intent.environment,
                                           intent.agent_owner)
        return [(AUTH_HEADER, credential.authenticate(value))]

    async def send_raw(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None,
                       partition: int | None = None, topic: str | None = None) -> None:
        await self._producer.send_and_wait(topic or self.names.intents, value, key=key, headers=headers,
                                           partition=partition)

    async def wait_for(self, predicate: Any, timeout_s: float = DECISION_TIMEOUT_S, what: str = "") -> None:
        """Wait until ``predicate()`` holds, woken by every batch that arrives."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what or predicate}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 1.0))

    async def decision(self, intent: Intent, final: bool | None = None) -> Decision:
        """The (first) decision on ``intent``; ``final`` picks pending/final for REQUIRE_APPROVAL."""
        def found() -> Decision | None:
            for d in self.decisions.get(intent.request_id, []):
                if final is None or d.final is final:
                    return d
            return None
        await self.wait_for(lambda: found() is not None, what=f"decision on {intent.request_id}")
        result = found()
        assert result is not None
        return result

    async def decide(self, intent: Intent) -> Decision:
        await self.send(intent)
        return await self.decision(intent)

    async def decide_all(self, intents: Iterable[Intent]) -> list[Decision]:
        """Send in order, then wait for all decisions (in the same order)."""
        batch = list(intents)
        for intent in batch:
            value = intent.model_dump_json().encode()
            await self._producer.send(self.names.intents, value, key=intent.agent_id.encode(),
                                      headers=self._headers(intent, value))
        await self._producer.flush()
        await self.wait_for(lambda: all(i.request_id in self.decisions for i in batch),
                            what=f"{len(batch)} decisions")
        return [self.decisions[i.request_id][0] for i in batch]
