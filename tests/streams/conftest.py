"""Fixtures of the processor's integration tests: one worker subprocess per module, a client per test."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from streams.policy_source import publish_policy
from tests.streams.harness import POLICIES, Client, WorkerProcess


def start_worker(bootstrap: str, workdir: Path, policy: str | None) -> WorkerProcess:
    """A worker on a fresh prefix, with ``policy`` (an example file name) published first."""
    worker = WorkerProcess(bootstrap, "t" + secrets.token_hex(5), workdir)
    if policy is not None:
        text = (POLICIES / policy).read_text()
        asyncio.run(publish_policy(bootstrap, worker.names.policies, text, policy))
    worker.start()
    return worker


@pytest.fixture(scope="module")
def fleet_worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker deciding with ``fleet_budget.yaml`` (all three decisions, an agent and a fleet limit)."""
    worker = start_worker(kafka_bootstrap, tmp_path_factory.mktemp("fleet"), "fleet_budget.yaml")
    try:
        asyncio.run(worker.wait_ready())
        yield worker
    finally:
        worker.stop()


@pytest.fixture
async def fleet(fleet_worker: WorkerProcess) -> AsyncIterator[Client]:
    """A client of the fleet worker's topics."""
    async with Client(fleet_worker.bootstrap, fleet_worker.prefix) as client:
        yield client


@pytest.fixture(scope="module")
def bare_worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker started before any policy was published (its tests publish them)."""
    worker = start_worker(kafka_bootstrap, tmp_path_factory.mktemp("bare"), None)
    try:
        asyncio.run(worker.wait_started())
        yield worker
    finally:
        worker.stop()


@pytest.fixture
async def bare(bare_worker: WorkerProcess) -> AsyncIterator[Client]:
    """A client of the bare worker's topics."""
    async with Client(bare_worker.bootstrap, bare_worker.prefix) as client:
        yield client
