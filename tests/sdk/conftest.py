"""The SDK's tests run with trust off unless a test gives its gate a credential (the trust tests do, and
the test of a gate refusing to start without one clears the setting)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def trust_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEGATE_TRUST_OFF", "1")
