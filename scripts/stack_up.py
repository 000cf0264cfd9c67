"""Report the local stack for ``make demo`` (before ``sluicegate demo`` exists): broker and ClickHouse."""

from __future__ import annotations

from infra.clickhouse import open_client
from infra.kafka import broker_status
from sluicegate.settings import Settings


def main() -> int:
    """Open the configured ClickHouse, check the broker answers, and say so; non-zero if not."""
    settings = Settings()
    broker = broker_status(settings.broker_data_dir)
    if settings.kafka_bootstrap_servers is None and not broker.ready:
        print(f"Kafka is not answering (data dir {settings.broker_data_dir}); run `sluicegate kafka start`")
        return 1
    version = open_client(settings.audit_url).query("SELECT version()").result_rows[0][0]
    print(f"Kafka:      {settings.bootstrap_servers} (Kafka {settings.kafka_version}, KRaft, one node)")
    print(f"ClickHouse: {settings.audit_url} (ClickHouse {version})")
    print("The stack is up. Stop the broker with: .venv/bin/sluicegate kafka stop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
