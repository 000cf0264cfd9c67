"""The ACL matrix of a deployment (one topic prefix), and applying it with the admin API.

Each role's user may do only what its processes do: agents write intents and outcomes and read
decisions; workers are the only writers of decisions, approval requests, approval results, the audit,
their internal topics and changelogs; reviewers (CLI, Slack bot) write verdicts and read requests and
results; the audit sink reads the audit; publishers write (and read) policies. The worker, the audit sink
and the Slack bot may also write the dead-letter topic. aiokafka has no
``create_acls``: the matrix is sent as Kafka CreateAcls requests through its admin client's connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from aiokafka.protocol.admin import CreateAclsRequest

from infra.kafka.admin import admin_client
from schemas.topics import TopicNames
from sluicegate.settings import PLAINTEXT, KafkaOptions

SLACK_BOT_GROUP = "sluicegate-slack-bot"
"""The Slack bot's consumer group (``consumers.slack_bot.SlackBotConfig.group_id``)."""
AUDIT_SINK_GROUP = "sluicegate-audit-sink"
"""The audit sink's consumer group (``consumers.audit_sink.DEFAULT_GROUP_ID``)."""


class Resource(IntEnum):
    """Kafka's resource type codes."""

    TOPIC = 2
    GROUP = 3


class Pattern(IntEnum):
    """Kafka's resource pattern type codes."""

    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    """Kafka's ACL operation codes (those the matrix uses)."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8


ALLOW = 3


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW entry: ``principal`` may ``operation`` on the resource, from any host."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation

    def line(self) -> str:
        """How ``sluicegate kafka acls`` prints it."""
        pattern = "prefixed" if self.pattern is Pattern.PREFIXED else "literal"
        return (f"{self.principal:<15} {self.operation.name:<8} {self.resource.name.lower():<5} "
                f"{self.name} ({pattern})")


def _topics(user: str, operation: Operation, names: Iterable[str], pattern: Pattern = Pattern.LITERAL,
            ) -> list[Acl]:
    return [Acl(f"User:{user}", Resource.TOPIC, name, pattern, operation) for name in names]


def _group(user: str, name: str, pattern: Pattern = Pattern.LITERAL) -> list[Acl]:
    return [Acl(f"User:{user}", Resource.GROUP, name, pattern, Operation.READ),
            Acl(f"User:{user}", Resource.GROUP, name, pattern, Operation.DESCRIBE)]


def matrix(prefix: str, users: dict[str, str] | None = None) -> list[Acl]:
    """Every ACL of the deployment with topic prefix ``prefix``; ``users`` maps a role (agent, worker,
    reviewer, sink, publisher) to its user name (default: the role's name)."""
    n = TopicNames(prefix)
    who = {role: role for role in ("agent", "worker", "reviewer", "sink", "publisher")} | (users or {})
    worker, internal, changelogs = who["worker"], f"{prefix}.internal.", f"{prefix}-worker-"
    acls = [
        *_topics(who["agent"], Operation.WRITE, [n.intents, n.outcomes, n.reply_leases]),
        *_topics(who["agent"], Operation.READ, [n.decisions, n.replies, n.reply_leases]),
        *_topics(worker, Operation.READ, [n.intents, n.outcomes, n.approvals, n.policies]),
        *_topics(worker, Operation.WRITE, [n.decisions, n.replies, n.approval_requests, n.approval_results,
                                           n.audit, n.dead_letter]),
        *_topics(worker, Operation.READ, [internal, changelogs], Pattern.PREFIXED),
        *_topics(worker, Operation.WRITE, [internal, changelogs], Pattern.PREFIXED),
        *_topics(worker, Operation.CREATE, [f"{prefix}.", changelogs], Pattern.PREFIXED),
        *_topics(worker, Operation.DESCRIBE, [f"{prefix}.", changelogs], Pattern.PREFIXED),
        *_group(worker, f"{prefix}-worker", Pattern.PREFIXED),
        *_topics(who["reviewer"], Operation.WRITE, [n.approvals]),
        *_topics(who["reviewer"], Operation.READ, [n.approval_requests, n.approvals, n.approval_results]),
        *_topics(who["reviewer"], Operation.WRITE, [n.dead_letter]),  # what the Slack bot cannot handle
        *_group(who["reviewer"], SLACK_BOT_GROUP),
        *_topics(who["sink"], Operation.READ, [n.audit]),
        *_topics(who["sink"], Operation.WRITE, [n.dead_letter]),
        *_group(who["sink"], AUDIT_SINK_GROUP),
        *_topics(who["publisher"], Operation.WRITE, [n.policies]),
        *_topics(who["publisher"], Operation.READ, [n.policies]),
        *_topics(who["publisher"], Operation.CREATE, [n.policies]),
    ]
    return sorted(set(acls))


class AclError(Exception):
    """The cluster refused an ACL."""


async def apply(bootstrap: str, acls: Iterable[Acl], options: KafkaOptions = PLAINTEXT) -> int:
    """Create ``acls`` (existing ones are kept: creating an ACL twice is a no-op); the count sent.
    ``options`` must authenticate a user allowed to alter ACLs (the super user)."""
    sent = 0
    async with admin_client(bootstrap, options) as admin:
        for acl in acls:
            request = CreateAclsRequest(acl.resource, acl.name, acl.pattern, acl.principal, "*",
                                        acl.operation, ALLOW)
            response = await admin._send_request(request)  # aiokafka's admin has no create_acls
            for error_code, message in response.creation_responses:
                if error_code:
                    raise AclError(f"{acl.line()}: error {error_code}: {message}")
            sent += 1
    return sent
