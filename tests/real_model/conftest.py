"""Real-model tests: marked ``real_model`` and skipped unless SYNTH_ENGINE_REAL_URL is set.

Every test module here except ``test_configs.py`` (offline checks of the configs, run in
every test run) needs a real OpenAI-compatible server; ``scripts/real-model.sh`` starts
one and sets the variable (see ``_real.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.real_model._real import URL

HERE = Path(__file__).resolve().parent
OFFLINE = {"test_configs.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs SYNTH_ENGINE_REAL_URL (scripts/real-model.sh)")
    for item in items:
        path = item.path.resolve()
        if path.parent != HERE or path.name in OFFLINE:
            continue
        item.add_marker(pytest.mark.real_model)
        if not URL:
            item.add_marker(skip)
