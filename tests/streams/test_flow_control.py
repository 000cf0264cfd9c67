"""The worker's flow control keeps queued records when flow is resumed while already active."""

from __future__ import annotations

from pathlib import Path

from mode.utils.queues import FlowControlQueue

from streams.app import WorkerConfig, make_faust_app
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
