"""The policies sluicegate ships: the demo fleet's policy and one example per governance scenario.

They are package data, so an installed wheel carries them; from a checkout they are the files under
``policies/`` that the README and the tests name. Each policy's table-driven cases are in ``cases/``
next to it (``sluicegate policy test`` finds them there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

POLICIES_DIR: Final = Path(__file__).resolve().parent
"""This directory: ``policies/`` in a checkout, ``<site-packages>/policies`` when installed."""

DEMO_POLICY: Final = POLICIES_DIR / "demo.yaml"
"""The company-wide policy ``sluicegate demo`` publishes."""

EXAMPLES_DIR: Final = POLICIES_DIR / "examples"
"""One policy per scenario, with its cases in ``examples/cases/``."""

