"""ClickHouse access: one opener for the embedded engine (``chdb://``) and servers (``http(s)://``).

The driver (clickhouse-connect, the ``audit`` extra) is imported on first use of ``open_client`` or
``ClickHouseUrlError``, so the DDL and its constants (``infra.clickhouse.migrate``) import without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infra.clickhouse.client import ClickHouseUrlError, open_client

__all__ = ["ClickHouseUrlError", "open_client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from infra.clickhouse import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
