"""Several local KRaft nodes (broker and controller each) as one cluster on loopback: what a replication
test needs (kill one broker under traffic). Each node is a launcher broker with its own data dir
``<base>/node-<id>``; they share one cluster id and one controller quorum."""

from __future__ import annotations

from pathlib import Path

from infra.kafka.launcher import (
    CLUSTER_ID_FILE,
    HOST,
    BrokerConfig,
    launch_broker,
    new_cluster_id,
    stop_broker,
    wait_ready,
)
from infra.kafka.process import free_port


def cluster_configs(base: Path, cache_dir: Path, version: str, nodes: int = 3,
                    heap: str = "384m") -> list[BrokerConfig]:
    """The nodes of a new cluster under ``base``: free ports, node ids 1..``nodes``."""
    ids = range(1, nodes + 1)
    quorum = tuple((node, free_port(HOST)) for node in ids)
    return [BrokerConfig(port=free_port(HOST), data_dir=(base / f"node-{node}").resolve(),
                         cache_dir=cache_dir, version=version, heap=heap, node_id=node, quorum=quorum)
            for node in ids]


def start_cluster(configs: list[BrokerConfig]) -> str:
    """Start every node (all spawned before any is awaited: a node answers once a quorum runs); the
    bootstrap servers of the cluster."""
    first = configs[0].data_dir / CLUSTER_ID_FILE
    shared = first.read_text().strip() if first.exists() else new_cluster_id()
    launched = []
    for config in configs:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        (config.data_dir / CLUSTER_ID_FILE).write_text(shared + "\n")
        resolved, pid, _ = launch_broker(config)
        launched.append((resolved, pid))
    for resolved, pid in launched:
        wait_ready(resolved, pid)
    return ",".join(f"{HOST}:{config.port}" for config in configs)


def stop_cluster(configs: list[BrokerConfig]) -> None:
    """Stop every node that runs."""
    for config in configs:
        stop_broker(config.data_dir, timeout_s=config.stop_timeout_s)
