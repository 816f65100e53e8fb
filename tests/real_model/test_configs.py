"""The real-model configs validate offline (this module runs in every test run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.methods import method_config
from tests.real_model._real import CONFIGS

CONFIG_FILES = sorted(CONFIGS.glob("*.toml"))


def test_one_config_per_method() -> None:
    methods = {load_config(p).run.method for p in CONFIG_FILES}
    assert methods == {"codeclm", "backtranslation", "selfguide", "lab"}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_real_config_validates(path: Path) -> None:
    url = "http://127.0.0.1:9999/v1"
    config = load_config(path, [f"endpoints.local.base_url={url}"])
    method_config(config)
    assert config.resolve(config.run.input or "").exists()
    assert set(config.endpoints) == {"local"}
    local = config.endpoints["local"]
    assert local.base_url == url and not config.simulated
    # llama-cpp-python takes a schema only inside json_object; strong, target and judge
    # are all the one server.
    assert local.structured_output == "json_object"
    assert {config.role_endpoint(r) for r in ("strong", "target", "judge")} == {"local"}


def test_structured_output_mode_is_overridable() -> None:
    config = load_config(CONFIG_FILES[0], ["endpoints.local.structured_output=false"])
    assert config.endpoints["local"].structured_output is False
    config = load_config(CONFIG_FILES[0], ["endpoints.local.structured_output=json_schema"])
    assert config.endpoints["local"].structured_output == "json_schema"
