"""The demo's credentials: a deployment's keys made for the run, as `sluicegate trust` makes them.

With trust on (the default), the run's key directory is ``<run>/trust`` (files mode 0600); the worker
gets the ring and the signing key in its environment, each simulated agent its own agent credential,
the demo policy is signed by the publisher ``demo``, and each simulated reviewer signs its verdicts
with its own reviewer credential. ``SLUICEGATE_TRUST_OFF=1`` runs the demo with nothing signed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sluicegate.cli.trust import Keys, create_keys
from sluicegate.demo.fleet import SimulatedAgent
from sluicegate.demo.reviewer import ReviewerTrust
from sluicegate.trust import AgentCredential, SignerCredential

PUBLISHER = "demo"


@dataclass(frozen=True, slots=True)
class DemoTrust:
    """The run's keys and the credentials issued from them."""

    directory: Path
    keys: Keys

    @classmethod
    def create(cls, directory: Path) -> DemoTrust:
        return cls(directory, create_keys(directory))

    def worker_env(self) -> dict[str, str]:
        """What the worker needs: the ring and the request signing key (and trust not off)."""
        return {
            "SLUICEGATE_TRUST_KEYS": str(self.keys.ring),
            "SLUICEGATE_TRUST_SIGNING_KEY": str(self.keys.signer),
            "SLUICEGATE_TRUST_PUBLIC_KEY": self.keys.signer.public,
            "SLUICEGATE_TRUST_OFF": "0",
        }

    @property
    def publisher(self) -> SignerCredential:
        return SignerCredential.issue(self.keys.ring, "publisher", PUBLISHER)

    @property
    def reviewers(self) -> ReviewerTrust:
        return ReviewerTrust.issue(self.keys.ring, self.keys.signer.public)

    def agents(self, agents: Sequence[SimulatedAgent]) -> list[AgentCredential]:
        """One credential per simulated agent, fixing its id, role, environment and owner."""
        ring = self.keys.ring
        return [AgentCredential.issue(ring, agent.agent_id, agent.role, agent.environment, agent.owner)
                for agent in agents]


TRUST_OFF_ENV = {"SLUICEGATE_TRUST_OFF": "1"}
"""The worker's environment when the demo runs with trust off."""
