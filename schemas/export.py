"""JSON Schema files of the wire contract and the policy document, for other languages."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.approval import ApprovalRequest, ApprovalVerdict
from schemas.audit import AuditRecord
from schemas.decision import Decision
from schemas.intent import Intent
from schemas.outcome import ExecutionOutcome
from schemas.policy import PolicyDocument

EXPORTED: dict[str, type[BaseModel]] = {
    "intent": Intent,
    "decision": Decision,
    "approval_request": ApprovalRequest,
    "approval_verdict": ApprovalVerdict,
    "execution_outcome": ExecutionOutcome,
    "audit_record": AuditRecord,
    "policy": PolicyDocument,
}
"""File stem -> model; each is written as ``<stem>.schema.json``."""

SCHEMA_DIR = Path(__file__).parent / "json"
"""Where the committed schema files live."""


def render(model: type[BaseModel]) -> str:
    """The JSON Schema of a model (validation mode), as stable, sorted, indented JSON."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    """File name -> content for every exported model."""
    return {f"{stem}.schema.json": render(model) for stem, model in EXPORTED.items()}


def export(directory: Path) -> list[Path]:
    """Write every schema file into ``directory`` (created if missing); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in rendered().items():
        path = directory / name
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written
