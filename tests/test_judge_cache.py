"""The clinical-text judge's calibration is kept on disk: the trainer calibrates it while it prepares,
and the app's first clinical-text check reads it instead of calibrating under the generation lock."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from hitl_app.evaluation.clinical_text import ClinicalTextJudge
from hitl_app.evaluation.judge_cache import JudgeCache
from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
from hitl_app.serving.manager import ModelManager
from hitl_app.training.round import RoundRunner
from hitl_app.versions.registry import Registry
from tests.test_models import GREEDY, slot_config

SYSTEM = "You are a careful medical assistant."
JUDGE = ClinicalTextJudge(reference_nll=2.5, threshold=3.5)


@pytest.fixture
def calibrations(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Counts calibrations (each one's system prompt), passing them on to the real one."""
    calls: list[str | None] = []
    real = ClinicalTextJudge.calibrate.__func__

    def counting(cls, base, tokenizer, system_prompt):
        calls.append(system_prompt)
        return real(cls, base, tokenizer, system_prompt)

    monkeypatch.setattr(ClinicalTextJudge, "calibrate", classmethod(counting))
    return calls


def _cache(root: Path, base: Path, **changes) -> JudgeCache:
    args = {"system_prompt": SYSTEM, "device": "cpu", "load_in_4bit": False, **changes}
    return JudgeCache(root, base, **args)


def test_a_stored_judge_is_read_back_only_with_the_same_inputs(tmp_path: Path, tiny_base: Path) -> None:
    cache = _cache(tmp_path, tiny_base)
    assert cache.read() is None
    cache.write(JUDGE)
    assert _cache(tmp_path, tiny_base).read() == JUDGE
    for changes in ({"system_prompt": "Answer in French."}, {"device": "cuda"}, {"load_in_4bit": True}):
        assert _cache(tmp_path, tiny_base, **changes).read() is None, changes
    other_base = tmp_path / "other-base"
    other_base.mkdir()
    (other_base / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    assert _cache(tmp_path, other_base).read() is None
    # no system prompt is the same whether written None or ""
    _cache(tmp_path, tiny_base, system_prompt=None).write(JUDGE)
    assert _cache(tmp_path, tiny_base, system_prompt="").read() == JUDGE


def test_an_unreadable_or_foreign_file_is_ignored(tmp_path: Path, tiny_base: Path, caplog) -> None:
    cache = _cache(tmp_path, tiny_base)
    cache.root.mkdir(parents=True)
    cache.path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert cache.read() is None
    assert "ignoring the unreadable judge calibration" in caplog.text
    cache.path.write_text(json.dumps({"key": "another", "reference_nll": 1.0, "threshold": 2.0}))
    assert cache.read() is None


def test_judge_calibrates_once_then_reads(tmp_path: Path, tiny_base: Path, calibrations: list) -> None:
    from hitl_app.evaluation.model_view import ModelView

    base = load_base(tiny_base, LoadOptions(device="cpu"))
    tokenizer = load_tokenizer(tiny_base)
    first = _cache(tmp_path, tiny_base).judge(ModelView(base), tokenizer)
    assert calibrations == [SYSTEM] and first.threshold > first.reference_nll
    assert _cache(tmp_path, tiny_base).judge(ModelView(base), tokenizer) == first
    assert calibrations == [SYSTEM]


def test_the_apps_first_check_reads_the_judge_the_trainer_calibrated(
    make_settings, tiny_base: Path, calibrations: list
) -> None:
    settings = make_settings(redteam_prompts=2, eval_probe_prompts=3)
    runner = RoundRunner(settings, str(tiny_base))
    runner.prepare()
    assert len(calibrations) == 1

    # The app's manager, with the cache the app builds: no second calibration, the trainer's judge.
    registry = Registry(settings.checkpoints_dir)
    models = ModelManager.wrap(
        load_base(tiny_base, LoadOptions(device="cpu")), load_tokenizer(tiny_base), registry, GREEDY,
        settings.system_prompt, slot_config(), judges=JudgeCache.for_settings(settings, str(tiny_base)),
    )  # fmt: skip
    nll, judge = models.clinical_text_nll("How is asthma treated?", "Inhaled steroids.")
    assert judge == runner._judge and len(calibrations) == 1
    assert nll > 0

    # Without a stored judge the manager calibrates it itself, once, and keeps it for the trainer.
    other = make_settings(system_prompt="Answer briefly.", checkpoints_dir=settings.checkpoints_dir)
    fresh = ModelManager.wrap(
        load_base(tiny_base, LoadOptions(device="cpu")), load_tokenizer(tiny_base), registry, GREEDY,
        other.system_prompt, slot_config(), judges=JudgeCache.for_settings(other, str(tiny_base)),
    )  # fmt: skip
    fresh.clinical_text_nll("How is asthma treated?", "Inhaled steroids.")
    fresh.clinical_text_nll("How is asthma treated?", "Inhaled steroids.")
    assert calibrations == [settings.system_prompt, "Answer briefly."]
    assert JudgeCache.for_settings(other, str(tiny_base)).read() == fresh._judge
