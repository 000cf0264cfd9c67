"""The worker's fixes to faust's consumer: flow control that keeps queued records, a short fetch wait."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from mode.utils.queues import FlowControlQueue

from streams.app import WorkerConfig, build, make_faust_app
from streams.fetch_wait import FETCH_MAX_WAIT_MS
from streams.flow_control import ResumeKeepsQueues


async def test_resume_while_active_keeps_queued_records() -> None:
    flow = ResumeKeepsQueues()
    queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    flow.resume()
    await queue.put("fetched during the seek")
    flow.resume()  # recovery's second resume, flow already active
    assert queue.qsize() == 1


async def test_resume_after_a_suspension_clears_what_slipped_in() -> None:
    flow = ResumeKeepsQueues()
    queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    flow.resume()
    queue.put_nowait("of the previous assignment")
    flow.suspend()
    flow.resume()
    assert queue.empty()


async def test_the_worker_app_uses_it(tmp_path: Path) -> None:
    app = make_faust_app(WorkerConfig(bootstrap="127.0.0.1:9", workdir=tmp_path))
    assert isinstance(app.flow_control, ResumeKeepsQueues)


async def test_the_worker_consumer_waits_at_most_the_short_fetch_wait(tmp_path: Path) -> None:
    app = build(WorkerConfig(bootstrap="127.0.0.1:9", workdir=tmp_path)).app
    thread: Any = cast(Any, app.consumer)._thread
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS < 1500
