"""The ClickHouse opener: URL parsing, the one-engine-per-process rule, and a real query."""

from __future__ import annotations

from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from infra.clickhouse import ClickHouseUrlError, open_client
from infra.clickhouse.client import MEMORY, chdb_location


def test_chdb_locations_are_absolute_resolved_paths_or_memory(tmp_path: Path) -> None:
    assert chdb_location(f"chdb://{tmp_path}/audit/") == str(tmp_path.resolve() / "audit")
    assert chdb_location("chdb://memory") == MEMORY
    with pytest.raises(ClickHouseUrlError, match="absolute directory"):
        chdb_location("chdb://relative/dir")


@pytest.mark.parametrize("url", ["clickhouse://localhost:9000", "localhost:8123", "ftp://x"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ClickHouseUrlError, match="unsupported ClickHouse URL"):
        open_client(url)


def test_the_client_answers_a_real_query(clickhouse_client: Client) -> None:
    assert clickhouse_client.query("SELECT toUInt32(40) + 2").result_rows == [(42,)]


def test_embedded_engine_is_one_per_process(
    clickhouse_url: str, clickhouse_client: Client, tmp_path: Path
) -> None:
    if not clickhouse_url.startswith("chdb:"):
        pytest.skip("the session uses a ClickHouse server, not the embedded engine")
    assert open_client(clickhouse_url) is clickhouse_client
    assert open_client(clickhouse_url.rstrip("/") + "/") is clickhouse_client
    with pytest.raises(ClickHouseUrlError, match="one engine per process"):
        open_client(f"chdb://{tmp_path / 'other'}")
