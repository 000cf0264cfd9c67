"""bench/cost_curves.py at tiny sizes: the three plots and the figures behind them, on the real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cost_curves


def test_rules_policies_are_not_trivial() -> None:
    """The generated policies apply more rules per intent as they grow, and decide all three ways."""
    small = cost_curves.rules_point(10, 100, 300, 1)
    large = cost_curves.rules_point(1_000, 100, 300, 1)
    assert large["rules_per_tool"] == 10 * small["rules_per_tool"]
    assert large["applied_per_intent"] > 3 * small["applied_per_intent"] > 0
    assert all(count > 0 for count in large["decisions"].values())


def test_quick_run_writes_plots_and_figures(tmp_path: Path, kafka_bootstrap: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    figures = cost_curves.run(tmp_path, quick=True)

    for name in ("rules.png", "state.png", "load.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "cost_curves.json").read_text()) == json.loads(json.dumps(figures))
    assert figures["machine"]["cpus"] >= 1

    rules = figures["rules"]
    assert isinstance(rules["load_at_start"], float)
    for points in rules["shapes"].values():
        assert [p["rules"] for p in points] == list(cost_curves.QUICK_RULE_SIZES)
        assert all(p["p50_us"] > 0 and p["floor_p50_us"] > 0 and p["p50_vs_floor"] > 0 for p in points)
    growing = rules["shapes"]["fleet of 100 tools"]  # 1 then 30 rules per tool: each intent checks more
    assert growing[-1]["rules_per_tool"] == 30
    assert growing[-1]["p50_us"] > 1.3 * growing[0]["p50_us"]

    state = figures["state"]["points"]
    assert [p["keys"] for p in state] == list(cost_curves.QUICK_KEY_SIZES)
    for point in state:
        assert point["applied"] == point["keys"]
        assert point["changelog_payload_bytes"] > 0 and point["rocksdb_bytes"] > 0 and point["restore_s"] > 0
    assert state[-1]["changelog_payload_bytes"] > 5 * state[0]["changelog_payload_bytes"]

    load = figures["load"]
    assert load["steps"] and isinstance(load["load_at_start"], float)
    for step in load["steps"]:
        assert step["worker"]["answered"] > 0 and step["echo"]["answered"] > 0
        assert step["p50_vs_floor"] is not None
