"""docs/configuration.md is generated from Settings and matches ``python main.py --help``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from hitl_app.core import config_docs
from hitl_app.core.config import Settings

REPO = Path(__file__).resolve().parent.parent


def test_the_reference_is_what_the_settings_generate() -> None:
    assert config_docs.main(["--check"]) == 0, "docs/configuration.md is out of date: run python -m hitl_app.core.config_docs"


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(config_docs.render().replace("Retrain after", "Retrain before"), encoding="utf-8")
    assert config_docs.main(["--check", "--out", str(stale)]) == 1
    assert config_docs.main(["--out", str(stale)]) == 0
    assert config_docs.main(["--check", "--out", str(stale)]) == 0


def test_the_reference_lists_exactly_the_flags_of_main_help() -> None:
    help_text = subprocess.run(
        [sys.executable, "main.py", "--help"], cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
        env={**os.environ, "COLUMNS": "10000"},  # no wrapped lines, so no flag is cut in two
    ).stdout
    in_help = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", help_text)) - {"--help"}
    in_doc = set(re.findall(r"`(--[a-z0-9][a-z0-9-]*)`", config_docs.render()))
    assert in_doc == in_help


def test_every_setting_is_in_exactly_one_section(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = dict(Settings.model_fields)
    monkeypatch.setattr(Settings, "model_fields", {**fields, "new_setting": FieldInfo(annotation=int, default=1)})
    with pytest.raises(ValueError, match=r"missing \['new_setting'\]"):
        config_docs.render()


@pytest.mark.parametrize(
    ("name", "flag", "default"),
    [("auto_retrain", "`--auto-retrain` / `--no-auto-retrain`", "on"), ("share", "`--share` / `--no-share`", "off"),
     ("auth_file", "`--auth-file`", "none"), ("learning_rate", "`--learning-rate`", "0.0005")],
)
def test_flags_and_defaults_are_spelt_as_typed(name: str, flag: str, default: str) -> None:
    field = Settings.model_fields[name]
    assert config_docs.flag(name, field) == flag
    assert config_docs.default_text(field) == default
