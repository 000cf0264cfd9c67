"""ClickHouse access: one opener for the embedded engine (``chdb://``) and servers (``http(s)://``)."""

from infra.clickhouse.client import ClickHouseUrlError, open_client

__all__ = ["ClickHouseUrlError", "open_client"]
