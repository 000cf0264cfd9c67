"""``sluicegate.cli.extras.require``: a missing extra is one line naming it, not a traceback."""

from __future__ import annotations

import sys

import pytest
import typer

from sluicegate.cli.extras import EXIT_MISSING_EXTRA, missing_extra_message, require


def test_the_message_names_the_extras_and_the_install_command() -> None:
    assert missing_extra_message("worker", ("worker",)) == (
        "sluicegate worker needs the worker extra: pip install 'sluicegate[worker]'"
    )
    assert missing_extra_message("demo", ("worker", "audit")) == (
        "sluicegate demo needs the worker and audit extras: pip install 'sluicegate[worker,audit]'"
    )


def test_an_extra_that_is_not_installed_stops_before_the_block(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "slack_bolt", None)  # find_spec says: not installed
    entered = False
    with pytest.raises(typer.Exit) as stopped, require("slack", command="slack run"):
        entered = True
    assert not entered
    assert stopped.value.exit_code == EXIT_MISSING_EXTRA
    assert capsys.readouterr().err == missing_extra_message("slack run", ("slack",)) + "\n"


def test_a_missing_module_of_the_extra_imported_in_the_block_gives_the_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(typer.Exit), require("worker", command="policy publish", check_installed=False):
        import prometheus_client  # noqa: F401
    assert "policy publish needs the worker extra" in capsys.readouterr().err


def test_other_import_errors_are_not_blamed_on_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "not_an_extra_module", None)
    with pytest.raises(ModuleNotFoundError), require("worker", command="worker", check_installed=False):
        import not_an_extra_module  # type: ignore[import-not-found]  # noqa: F401


def test_an_unknown_extra_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown extras"), require("nope", command="x"):
        pass
