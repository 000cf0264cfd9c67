"""The ACL matrix: who may write what (pure: no broker)."""

from __future__ import annotations

from infra.kafka.acls import Operation, Pattern, Resource, matrix
from schemas.topics import TopicNames

NAMES = TopicNames("p")
WORKER_ONLY = [NAMES.decisions, NAMES.approval_requests, NAMES.approval_results, NAMES.audit]


def writers(topic: str) -> set[str]:
    """Principals allowed to write ``topic`` (literal or by prefix)."""
    return {acl.principal for acl in matrix("p") if acl.resource is Resource.TOPIC
            and acl.operation is Operation.WRITE
            and (acl.name == topic if acl.pattern is Pattern.LITERAL else topic.startswith(acl.name))}


def test_only_workers_write_decisions_approval_requests_results_audit_and_internal_topics() -> None:
    for topic in [*WORKER_ONLY, "p.internal.shared-limits", "p-worker-agent-state-changelog"]:
        assert writers(topic) == {"User:worker"}, topic


def test_agents_write_intents_and_outcomes_reviewers_verdicts_publishers_policies() -> None:
    assert writers(NAMES.intents) == {"User:agent"}
    assert writers(NAMES.outcomes) == {"User:agent"}
    assert writers(NAMES.approvals) == {"User:reviewer"}
    assert writers(NAMES.policies) == {"User:publisher"}


def test_the_matrix_is_for_one_prefix_and_names_other_users_when_asked() -> None:
    acls = matrix("p", {"agent": "fleet-a"})
    assert {acl.principal for acl in acls
            if acl.name == NAMES.intents and acl.operation is Operation.WRITE} == {"User:fleet-a"}
    assert all(acl.name.startswith("p") or acl.resource is Resource.GROUP for acl in acls)
