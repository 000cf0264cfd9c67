"""The webhook notifier on a real broker, delivering to a local HTTP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from consumers.webhook_notifier import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveredStore,
    Receiver,
    WebhookConfigError,
    WebhookNotifier,
    load_targets,
    verify,
)
from schemas import ApprovalRequest, Decision, DecisionKind, TopicNames
from sluicegate.cli.review import ReviewTrust
from tests.approvals.factories import T0, WorkerKeys, make_request
from tests.approvals.kafka_util import create_topics, produce, produce_signed

pytestmark = pytest.mark.integration
SECRET = b"s3cret-for-the-payments-hook"
GROUP = "payments-reviewers"


@dataclass
class Received:
    """What the receiver got; it answers 500 to the first ``failures`` POSTs."""

    failures: int = 0
    posts: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout_s: float = 120.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.posts) >= count, timeout_s), self.posts

    def accepted(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, status in self.posts if status == 200]


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    received = Received(failures=1)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with received.changed:
                status = 500 if received.failures > 0 else 200
                received.failures -= 1
                received.posts.append((dict(self.headers), body, status))
                received.changed.notify_all()
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    thread.join()


@contextlib.asynccontextmanager
async def running(notifier: WebhookNotifier) -> AsyncIterator[None]:
    task = asyncio.create_task(notifier.run())
    try:
        yield
    finally:
        notifier.stop()
        await asyncio.wait_for(task, 30)


def final(request: ApprovalRequest) -> Decision:
    return Decision(request_id=request.request_id, agent_id=request.intent.agent_id,
                    decision=DecisionKind.ALLOW, approved_by=("alice",), decided_at=T0, final=True)


async def test_requests_and_finals_are_delivered_signed_retried_and_never_twice(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, receiver: tuple[str, Received]
) -> None:
    url, received = receiver
    keys, topics = WorkerKeys(), TopicNames(unique_name)
    await create_topics(kafka_bootstrap, topics)
    first, forged, second = make_request(), make_request(), make_request()
    await produce(kafka_bootstrap, topics.approval_requests, str(forged.request_id), forged)  # unsigned
    await produce_signed(kafka_bootstrap, topics.approval_requests, str(first.request_id), first, keys)
    await produce_signed(kafka_bootstrap, topics.approval_results, str(first.request_id), final(first), keys)

    def notifier(group_id: str) -> WebhookNotifier:
        return WebhookNotifier(kafka_bootstrap, topics, ReviewTrust(keys.public),
                               {GROUP: [Receiver(url, SECRET)]}, DeliveredStore(tmp_path / "delivered.jsonl"),
                               retry_initial_s=0.05, group_id=group_id)

    async with running(notifier(f"{unique_name}.one")):
        await asyncio.to_thread(received.wait_for, 3)  # the request twice (500, then 200), its final
    delivered = [(h[DELIVERY_HEADER], status) for h, _, status in received.posts]
    asked, settled = f"{first.request_id}:approval_request", f"{first.request_id}:approval_final"
    assert delivered == [(asked, 500), (asked, 200), (settled, 200)]
    for headers, body, _ in received.posts:
        stamp, signature = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
        assert verify(SECRET, stamp, body, signature, time.time())
        assert not verify(b"another secret", stamp, body, signature, time.time())
    request, decided = received.accepted()
    assert ApprovalRequest.model_validate(request["request"]) == first
    assert (decided["event"], decided["decision"]["decision"]) == ("approval_final", "ALLOW")

    # A restart reading everything again (a new consumer group) posts only what is new; a final
    # published before its request is still delivered after it.
    results = topics.approval_results
    await produce_signed(kafka_bootstrap, results, str(second.request_id), final(second), keys)
    await produce_signed(kafka_bootstrap, topics.approval_requests, str(second.request_id), second, keys)
    async with running(notifier(f"{unique_name}.two")):
        await asyncio.to_thread(received.wait_for, 5)
    assert [h[DELIVERY_HEADER] for h, _, _ in received.posts[3:]] == [
        f"{second.request_id}:approval_request", f"{second.request_id}:approval_final"]
    assert str(forged.request_id) not in json.dumps([h for h, _, _ in received.posts])


def test_a_targets_file_needs_its_secrets(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(f"groups:\n  {GROUP}: [{{url: 'https://hooks.example/a', secret_env: HOOK_A}}]\n")
    assert load_targets(path, {"HOOK_A": "x"}) == {GROUP: [Receiver("https://hooks.example/a", b"x")]}
    with pytest.raises(WebhookConfigError, match="secrets not set in the environment: HOOK_A"):
        load_targets(path, {})
    path.write_text("groups: {g: [{url: 'ftp://x', secret_env: A}]}\n")
    with pytest.raises(WebhookConfigError):
        load_targets(path, {"A": "x"})
