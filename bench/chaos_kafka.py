"""How each process of the chaos run reaches its broker (``--kafka-protocol``): as anyone on an open
broker, else as its role's user on a secure one (``kafka start --secure``: SCRAM or mutual TLS, the ACL
matrix of the run's prefix applied), from the settings lines ``kafka start --secure`` prints, read
through :class:`Settings` like every other client."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from infra.kafka import BrokerConfig
from infra.kafka.acls import apply, matrix
from infra.kafka.secure import (
    ADMIN,
    PROTOCOLS,
    Credentials,
    Listener,
    client_options,
    listener_of,
    settings_lines,
)
from sluicegate.settings import Settings

OPEN = "PLAINTEXT"
CHOICES = (OPEN, *PROTOCOLS)


def broker_config(base: BrokerConfig, protocol: str) -> BrokerConfig:
    """The run's broker: open, or secure with ``protocol`` as its client listener."""
    return base if protocol == OPEN else replace(base, secure=True, protocol=protocol)


@dataclass(frozen=True)
class ChaosKafka:
    """The run's broker as each role sees it."""

    bootstrap: str
    credentials: Credentials | None = None
    listener: Listener | None = None

    @classmethod
    def of(cls, broker: BrokerConfig) -> ChaosKafka:
        """The access to ``broker`` (started): its users and listener when it is secure."""
        bootstrap = f"127.0.0.1:{broker.port}"
        if not broker.secure:
            return cls(bootstrap)
        return cls(bootstrap, Credentials.load(broker.data_dir), listener_of(broker.data_dir))

    def env(self, role: str) -> dict[str, str]:
        """``role``'s ``SLUICEGATE_KAFKA_*`` lines (none on an open broker): a subprocess's environment."""
        if self.credentials is None or self.listener is None:
            return {}
        lines = settings_lines(role, self.bootstrap, self.credentials, self.listener)
        return dict(line.split("=", 1) for line in lines)

    def settings(self, role: str) -> dict[str, Any]:
        """``role``'s Kafka settings as typed values (a ``Settings.model_copy`` update)."""
        fields = {name.removeprefix("SLUICEGATE_").lower(): value for name, value in self.env(role).items()}
        parsed = Settings.model_validate(fields)
        return {name: getattr(parsed, name) for name in fields}

    def options(self, role: str) -> dict[str, Any]:
        """aiokafka keyword arguments for ``role`` (:meth:`Settings.kafka_client_options`)."""
        return Settings.model_validate(self.settings(role)).kafka_client_options() if self.credentials else {}

    async def apply_acls(self, prefix: str) -> None:
        """The ACL matrix of ``prefix``, as the super user (nothing on an open broker)."""
        if self.credentials is None or self.listener is None:
            return
        admin = client_options(ADMIN, self.credentials.password(ADMIN), self.listener)
        await apply(self.bootstrap, matrix(prefix), admin)
