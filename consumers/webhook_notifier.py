"""Reviewers beyond Slack: POST each approval request, and its final decision, to the approver group's URLs.

Targets are a YAML file of URLs per approver group, each with the environment variable holding its
shared secret (secrets stay out of the file)::

    groups:
      payments:
        - {url: "https://hooks.example.com/sluicegate", secret_env: PAYMENTS_HOOK_SECRET}

Each delivery is one JSON body: ``{"event": "approval_request", "request": {...}}`` or
``{"event": "approval_final", "request_id": ..., "decision": {...}}``, with the headers

- ``X-Sluicegate-Delivery``: ``<request id>:<event>``, the same for every try (receivers dedupe on it);
- ``X-Sluicegate-Timestamp``: seconds since the epoch when the try was sent;
- ``X-Sluicegate-Signature``: ``sha256=`` + hex HMAC-SHA256 of ``<timestamp>.<body>`` under the secret.

A try that fails (no answer, or not 2xx) is retried with exponential backoff up to ``attempts`` times.
Deliveries that were answered 2xx are recorded in a state file, so a restart (or a redelivered record)
never posts them again. Only approval requests and finals the workers signed are delivered (the same
checks as the Slack bot and the CLI); a receiver answers with ``sluicegate approvals approve|deny``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias
from uuid import UUID

import yaml
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import ApprovalRequest, Decision, TopicNames
from sluicegate.cli.review import ReviewTrust, digest_mismatch, where
from sluicegate.trust import TrustError

log = logging.getLogger(__name__)
Record: TypeAlias = ConsumerRecord[bytes, bytes]
SIGNATURE_HEADER = "X-Sluicegate-Signature"
TIMESTAMP_HEADER = "X-Sluicegate-Timestamp"
DELIVERY_HEADER = "X-Sluicegate-Delivery"
POST_TIMEOUT_S = 10.0
MAX_EARLY_FINALS = 10_000


class WebhookConfigError(ValueError):
    """A targets file that cannot be read, or a secret that is not set."""


class Target(BaseModel):
    """One receiver: its URL and the environment variable holding its secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://")
    secret_env: str = Field(min_length=1)


class Targets(BaseModel):
    """The receivers of each approver group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: dict[str, list[Target]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Receiver:
    url: str
    secret: bytes


def load_targets(path: Path, environ: dict[str, str] | None = None) -> dict[str, list[Receiver]]:
    """The receivers per group; WebhookConfigError names what is missing."""
    env = os.environ if environ is None else environ
    try:
        targets = Targets.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise WebhookConfigError(f"{path}: {exc}") from None
    names = {target.secret_env for listed in targets.groups.values() for target in listed}
    missing = sorted(name for name in names if not env.get(name))
    if missing:
        raise WebhookConfigError(f"{path}: secrets not set in the environment: {', '.join(missing)}")
    return {group: [Receiver(t.url, env[t.secret_env].encode()) for t in ts]
            for group, ts in targets.groups.items()}


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value (what a receiver recomputes to verify a delivery)."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: float, tolerance_s: float = 300.0
) -> bool:
    """A receiver's check: the signature matches and the timestamp is recent."""
    try:
        fresh = abs(now - float(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class DeliveredStore:
    """The deliveries answered 2xx (``<delivery id> <url>`` per line) and the group of each request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: set[tuple[str, str]] = set()
        self.groups: dict[str, str] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                self.done.add((entry["delivery"], entry["url"]))
                if entry.get("group"):
                    self.groups[entry["delivery"].split(":")[0]] = entry["group"]

    def add(self, delivery: str, url: str, group: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"delivery": delivery, "url": url, "group": group}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        self.done.add((delivery, url))
        self.groups[delivery.split(":")[0]] = group


@dataclass
class WebhookNotifier:
    """Reads approval requests and finals and delivers them to their group's receivers."""

    bootstrap: str
    topics: TopicNames
    trust: ReviewTrust
    receivers: dict[str, list[Receiver]]
    store: DeliveredStore
    attempts: int = 8
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    group_id: str | None = None
    clock: Callable[[], float] = time.time
    early: dict[str, Decision] = field(default_factory=dict)
    """Finals read before their request, by request id (bounded)."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Deliver until :meth:`stop`; offsets are committed after each batch is delivered."""
        consumer = AIOKafkaConsumer(
            self.topics.approval_requests, self.topics.approval_results, bootstrap_servers=self.bootstrap,
            group_id=self.group_id or f"{self.topics.prefix}.webhook", auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            while not self._stop.is_set():
                handled: dict[TopicPartition, int] = {}
                batch = await consumer.getmany(timeout_ms=500)
                requests_first = sorted(batch.items(),
                                        key=lambda item: item[0].topic != self.topics.approval_requests)
                for partition, records in requests_first:
                    for record in records:
                        if not await self.handle(record):
                            consumer.seek(partition, record.offset)  # read it again; commit nothing past it
                            break
                        handled[partition] = record.offset + 1
                if handled:
                    await consumer.commit(handled)
        finally:
            await consumer.stop()

    def stop(self) -> None:
        self._stop.set()

    async def handle(self, record: Record) -> bool:
        """Deliver one record if the workers signed it (anything else is logged and skipped); False when
        a receiver could not be reached after every try: the record is not done with."""
        try:
            self.trust.verify(record)
        except TrustError as exc:
            log.warning("ignoring %s: %s", where(record), exc)
            return True
        try:
            if record.topic == self.topics.approval_requests:
                return await self._request(ApprovalRequest.model_validate_json(record.value or b""), record)
            return await self._final(Decision.model_validate_json(record.value or b""))
        except ValidationError as exc:
            log.warning("ignoring %s: not a valid record: %s", where(record), exc)
            return True

    async def _request(self, request: ApprovalRequest, record: Record) -> bool:
        mismatch = digest_mismatch(request)
        if mismatch is not None:
            log.error("ignoring approval request %s at %s: %s", request.request_id, where(record), mismatch)
            return True
        body = {"event": "approval_request", "request": request.model_dump(mode="json")}
        if not await self._deliver(request.request_id, "approval_request", request.approver_group, body):
            return False
        early = self.early.pop(str(request.request_id), None)
        return early is None or await self._final(early)

    async def _final(self, decision: Decision) -> bool:
        if not decision.final:
            return True
        group = self.store.groups.get(str(decision.request_id))
        if group is None:  # read before its request: delivered right after it
            self.early[str(decision.request_id)] = decision
            while len(self.early) > MAX_EARLY_FINALS:
                self.early.pop(next(iter(self.early)))
            return True
        body = {"event": "approval_final", "request_id": str(decision.request_id),
                "decision": decision.model_dump(mode="json")}
        return await self._deliver(decision.request_id, "approval_final", group, body)

    async def _deliver(self, request_id: UUID, event: str, group: str, body: dict[str, Any]) -> bool:
        """Post to every receiver of ``group`` not yet answered; True when all have answered 2xx."""
        delivery = f"{request_id}:{event}"
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        done = True
        for receiver in self.receivers.get(group, []):
            if (delivery, receiver.url) in self.store.done:
                continue
            if await self._post(receiver, delivery, event, data):
                self.store.add(delivery, receiver.url, group)
            else:
                done = False
        return done

    async def _post(self, receiver: Receiver, delivery: str, event: str, data: bytes) -> bool:
        """POST with retries and backoff; True once the receiver answered 2xx."""
        delay = self.retry_initial_s
        for attempt in range(1, self.attempts + 1):
            timestamp = str(int(self.clock()))
            headers = {"Content-Type": "application/json", "X-Sluicegate-Event": event,
                       DELIVERY_HEADER: delivery, TIMESTAMP_HEADER: timestamp,
                       SIGNATURE_HEADER: sign(receiver.secret, timestamp, data)}
            problem = await asyncio.to_thread(_post, receiver.url, data, headers)
            if problem is None:
                return True
            log.warning("delivery %s to %s failed (try %d of %d): %s", delivery, receiver.url, attempt,
                        self.attempts, problem)
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
        log.error("%d tries to deliver %s to %s failed; trying again", self.attempts, delivery, receiver.url)
        return False


def _post(url: str, data: bytes, headers: dict[str, str]) -> str | None:
    """None when the receiver answered 2xx, else what went wrong."""
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as reply:
            return None if 200 <= reply.status < 300 else f"HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
