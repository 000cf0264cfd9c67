"""The worker's web pages, policy reader and timers, hosted by the faust app: ``/metrics``
(Prometheus), ``/ready`` (200 once deciding) and ``/status`` (why a worker does not progress)."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas import Decision
from streams.app import Processor

log = logging.getLogger(__name__)
REVIEWERS_RELOAD_S = 1.0
"""How often the reviewers file is checked for changes."""


def ready(p: Processor) -> bool:
    """Deciding: a policy read to the topic's end, partitions assigned and their tables restored."""
    return p.policies.caught_up.is_set() and p.policies.current is not None and p.runner.ready()


def status(p: Processor) -> dict[str, Any]:
    """What an operator needs to see why a worker does not progress (the ``/status`` page)."""
    policy = p.policies.current
    return {
        "ready": ready(p), "trust": "on" if p.runner.trust.on else "OFF: nothing is verified",
        "policy_version": policy.version if policy else None,
        "shadow_version": p.policies.shadow.version if p.policies.shadow else None,
        "policy_caught_up": p.policies.caught_up.is_set(), "tables_restored": p.runner.restored.is_set(),
        "partitions": p.runner.status(),
    }


def register(p: Processor) -> None:
    """Attach the policy reader, the reviewer-file reload, the metrics hooks and the pages to ``p.app``."""
    app = p.app
    p.metrics.watch_lag(p.runner.lag)

    def count_final(decision: Decision) -> None:  # approval finals: not an outcome of an agent's message
        p.metrics.decisions.labels(decision.decision.value, "true").inc()

    p.decide_stage.on_approved = p.approval_stage.on_refused = count_final

    async def read_policies() -> None:
        _quiet_clients(p.config.log_level)
        await p.policies.run()

    async def reload_reviewers() -> None:
        p.approval_stage.reviewers.refresh()

    async def metrics_page(web: Any, request: Any) -> Any:
        p.metrics.ready.set(1 if ready(p) else 0)
        return web.bytes(generate_latest(p.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def ready_page(web: Any, request: Any) -> Any:
        policy = p.policies.current
        body = {"ready": ready(p), "policy_version": policy.version if policy else None,
                "partitions": len(p.runner.partitions)}
        return web.json(body, status=200 if body["ready"] else 503)

    async def status_page(web: Any, request: Any) -> Any:
        return web.json(status(p))

    app.task(read_policies)
    app.timer(REVIEWERS_RELOAD_S)(reload_reviewers)
    app.page("/metrics")(metrics_page)
    app.page("/ready")(ready_page)
    app.page("/status")(status_page)


def _quiet_clients(level_name: str) -> None:
    """Keep the Kafka clients' per-message debug records off unless asked (about 10% of the CPU)."""
    level = max(logging.INFO, logging.getLevelName(level_name.upper()) if level_name else logging.INFO)
    for name in ("aiokafka", "faust", "mode"):
        logging.getLogger(name).setLevel(level)
