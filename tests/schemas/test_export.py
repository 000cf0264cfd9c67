"""The committed JSON Schema files are current, and they describe what the models accept."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.export import EXPORTED, SCHEMA_DIR, rendered
from schemas.policy import PolicyDocument
from sluicegate.cli import _register, app


@pytest.mark.parametrize(("name", "content"), sorted(rendered().items()))
def test_committed_schema_is_current(name: str, content: str) -> None:
    path = SCHEMA_DIR / name
    assert path.exists(), f"{name} missing: run `sluicegate schemas export {SCHEMA_DIR}`"
    assert path.read_text(encoding="utf-8") == content, (
        f"{name} is stale: run `sluicegate schemas export {SCHEMA_DIR}`"
    )


def test_no_stray_schema_files() -> None:
    assert {path.name for path in SCHEMA_DIR.glob("*.json")} == set(rendered())


def test_export_command_writes_every_schema(tmp_path: Path) -> None:
    _register()
    result = CliRunner().invoke(app, ["schemas", "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(rendered())
    assert len(EXPORTED) == 7


def test_policy_schema_forbids_unknown_fields() -> None:
    schema = PolicyDocument.model_json_schema(by_alias=True)
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Rule"]["additionalProperties"] is False
    assert "not" in schema["$defs"]["NotCondition"]["properties"]
