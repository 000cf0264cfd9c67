"""The faust agents, tasks, timer and web pages of a worker: thin adapters around
:mod:`streams.stages.approval`. The deciding stages run beside them, in :mod:`streams.runtime.runner`.

Each agent runs with concurrency 1: one actor handles the events of its partitions in order, so a
partition's state is only ever changed by one coroutine, between two awaits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas import Decision
from streams.app import Processor
from streams.messages import Open, Tick, kind_of
from streams.metrics import unhandled
from streams.stages.outputs import Route, Send, dead_letter, now_ms

log = logging.getLogger(__name__)
EXPIRY_INTERVAL_S = 1.0
RETICK_S = 10.0
"""A due approval is ticked again after this long if the first tick did not settle it."""


def _record_ms(message: Any) -> int:
    """The Kafka timestamp of a record in ms (the wall clock if it has none)."""
    return int(message.timestamp * 1000) if message.timestamp else now_ms()


class Runtime:
    """Per-worker glue: sending outcomes, metrics, lag and readiness."""

    def __init__(self, processor: Processor) -> None:
        self.p = processor
        self.positions: dict[tuple[str, int], int] = {}

    async def send(self, sends: list[Send]) -> None:
        """Hand the messages to the app's producer (the one faust flushes before committing offsets).

        Straight to the transport producer: faust's ``Topic.send`` layer (serialisers, sensors,
        callbacks) cost more than the rest of the decision; our values are bytes already.
        """
        producer = self.p.app.producer
        for item in sends:
            topic = self.p.routes[item.route]
            await producer.send(topic, item.key, item.value, None, None, list(item.headers) or None)

    def track(self, message: Any) -> None:
        self.positions[(message.topic, message.partition)] = message.offset

    async def fetched_all(self, topic: str, partition: int) -> bool:
        """True when every record of the partition up to its last known end was handed to the agents
        (they queue them in fetch order, so a message produced now is handled after all of them)."""
        consumer = self.p.app.consumer
        tp = TP(topic, partition)
        try:
            high = consumer.highwater(tp)
            position = await consumer.position(tp)
        except Exception:  # not assigned or not fetched yet
            return False
        return high is not None and position is not None and position >= high

    def lag(self) -> dict[tuple[str, int], int]:
        consumer = self.p.app.consumer
        result: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            try:
                high = consumer.highwater(tp)
            except Exception:  # not fetched yet
                continue
            if high is None:
                continue
            result[(tp.topic, tp.partition)] = unhandled(high, self.positions.get((tp.topic, tp.partition)))
        for runner in self.p.runners:
            result |= runner.lag()
        return result

    def ready(self) -> bool:
        """Deciding: a policy read to the topic's end, partitions assigned and their tables restored."""
        app: Any = self.p.app  # faust's abstract types lack the concrete tables.recovery
        assigned = bool(app.consumer.assignment()) if app.consumer else False
        return (self.p.policies.caught_up.is_set() and self.p.policies.current is not None
                and assigned and app.tables.recovery.completed.is_set() and not app.rebalancing
                and all(runner.ready() for runner in self.p.runners))

    def status(self) -> dict[str, Any]:
        """What an operator needs to see why a worker does not progress (the ``/status`` page)."""
        app: Any = self.p.app
        policy, consumer = self.p.policies.current, app.consumer
        paused = {(tp.topic, tp.partition) for tp in getattr(consumer, "_paused_partitions", ())}
        partitions: dict[str, dict[str, Any]] = {}
        for tp in sorted(consumer.assignment()) if consumer else []:
            try:
                high = consumer.highwater(tp)
            except Exception:  # not fetched yet
                high = None
            partitions[f"{tp.topic}[{tp.partition}]"] = {
                "handled": self.positions.get((tp.topic, tp.partition)), "highwater": high,
                "paused": (tp.topic, tp.partition) in paused}
        return {
            "ready": self.ready(), "policy_version": policy.version if policy else None,
            "policy_caught_up": self.p.policies.caught_up.is_set(),
            "generation": app.consumer_generation_id, "rebalancing": app.rebalancing,
            "recovery_completed": app.tables.recovery.completed.is_set(),
            "flow_active": bool(consumer and consumer.flow_active),
            "flow_control_active": app.flow_control.is_active(),
            "partitions": partitions | {k: v for r in self.p.runners for k, v in r.status().items()},
        }


def register(p: Processor) -> None:
    """Attach the agents, the policy reader task and the web pages to ``p.app``."""
    app, rt = p.app, Runtime(p)
    p.metrics.watch_lag(rt.lag)

    def count_final(decision: Decision) -> None:  # approval finals: not an outcome of an agent's message
        p.metrics.decisions.labels(decision.decision.value, "true").inc()

    p.decide_stage.on_approved = p.approval_stage.on_refused = count_final
    approvals_topic = p.topics.names.approvals

    async def read_policies() -> None:
        _quiet_clients(p.config.log_level)
        await p.policies.run()

    async def approvals(stream: Any) -> AsyncIterator[None]:
        stage = p.approval_stage
        async for event in stream.events():
            message = event.message
            try:
                at_ms, part = _record_ms(message), message.partition
                if message.topic == approvals_topic:
                    sends = stage.handle_verdict(message.value, message.key, part, at_ms)
                elif kind_of(message.value) == "tick":
                    sends = stage.handle_tick(Tick.model_validate_json(message.value), part, at_ms)
                else:
                    sends = stage.handle_open(Open.model_validate_json(message.value), part)
                await rt.send(sends)
            except Exception as exc:
                log.exception("failed on %s[%d]@%d", message.topic, message.partition, message.offset)
                await rt.send([dead_letter(message.key, message.value, exc)])
            rt.track(message)
            yield None

    ticked: dict[UUID, float] = {}

    indexed_generation = -1  # the consumer generation the approval stage's due index was built for

    async def expire_approvals() -> None:
        """Tick the due approvals of this worker's partitions (see :mod:`streams.stages.approval`)."""
        nonlocal indexed_generation
        try:
            p.approval_stage.reviewers.refresh()
            faust_app: Any = app
            if faust_app.rebalancing or not faust_app.tables.recovery.completed.is_set():
                return  # the table is being restored: its markers are not all there yet
            if faust_app.consumer_generation_id != indexed_generation:
                p.approval_stage.reindex()  # restored or rebalanced: markers this stage did not write
                indexed_generation = faust_app.consumer_generation_id
            now = time.monotonic()
            for request_id in [r for r, at in ticked.items() if now - at >= RETICK_S]:
                del ticked[request_id]
            ticks: list[Send] = []
            ready: dict[int, bool] = {}
            for request_id, part in p.approval_stage.due(now_ms()):
                if request_id in ticked:
                    continue
                if part not in ready:
                    ready[part] = await rt.fetched_all(approvals_topic, part)
                if ready[part]:
                    ticked[request_id] = now
                    tick = Tick(request_id=request_id, tick=uuid4().hex).model_dump_json().encode()
                    ticks.append(Send(Route.APPROVAL_CONTROL, str(request_id).encode(), tick))
            await rt.send(ticks)
        except Exception:  # never kill the timer; the next round tries again
            log.exception("approval expiry round failed")

    async def metrics_page(web: Any, request: Any) -> Any:
        p.metrics.ready.set(1 if rt.ready() else 0)
        return web.bytes(generate_latest(p.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def ready_page(web: Any, request: Any) -> Any:
        policy = p.policies.current
        body = {"ready": rt.ready(), "policy_version": policy.version if policy else None,
                "partitions": len(app.consumer.assignment()) if app.consumer else 0}
        return web.json(body, status=200 if body["ready"] else 503)

    async def status_page(web: Any, request: Any) -> Any:
        return web.json(rt.status())

    app.task(read_policies)
    app.agent(p.channels["approvals_in"], name="approvals", concurrency=1)(approvals)
    app.timer(EXPIRY_INTERVAL_S)(expire_approvals)
    app.page("/metrics")(metrics_page)
    app.page("/ready")(ready_page)
    app.page("/status")(status_page)


def _quiet_clients(level_name: str) -> None:
    """Keep the Kafka clients' per-message debug records off unless asked (about 10% of the CPU)."""
    level = max(logging.INFO, logging.getLevelName(level_name.upper()) if level_name else logging.INFO)
    for name in ("aiokafka", "faust", "mode"):
        logging.getLogger(name).setLevel(level)

