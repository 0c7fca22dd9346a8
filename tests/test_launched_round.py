"""A round whose policy training runs under ``accelerate launch`` (``--train-launcher accelerate``):
two CPU processes (DDP over gloo) train the adapter a single process trains, the round publishes
once, and a failed process fails the round cleanly. Run these alone with ``pytest -m distributed``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hitl_app.feedback.records import BASE_VERSION, Feedback
from hitl_app.feedback.store import FeedbackStore
from hitl_app.training.faults import FAULT_ENV
from hitl_app.training.launch import Launcher, LaunchFailed
from hitl_app.training.round import RoundRunner
from hitl_app.versions.registry import ADAPTER_WEIGHTS, Registry
from tests.helpers import urgent_generation

QUESTIONS = [
    "I have crushing chest pain, what should I do?",
    "My face is drooping on one side, is that serious?",
    "I cannot stop a deep cut from bleeding.",
    "My child is struggling to breathe.",
]
# Dropout off: each process draws its own dropout masks, which one process would draw differently.
ROUND = dict(num_epochs=1, train_batch_size=2, lora_dropout=0.0, gate="off", reward_model="off", replay_size=0)


def _judge(store: FeedbackStore) -> None:
    """Four rankings (DPO pairs) and four edits (SFT rows)."""
    for question in QUESTIONS:
        for action in ("rank", "edit"):
            gen = urgent_generation(store, question)
            extra = {"ranking": [[0], [1]]} if action == "rank" else {"text": f"Seek urgent care now: {question.lower()}"}
            store.append(Feedback(reviewer="dr-a", generation_id=gen.id, action=action, **extra))


def _adapter(settings) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Registry(settings.checkpoints_dir).adapter_dir("v0001") / ADAPTER_WEIGHTS))


def test_the_settings_refuse_a_launch_they_cannot_run(make_settings, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="--train-processes above 1 needs --train-launcher accelerate"):
        make_settings(train_processes=2)
    with pytest.raises(ValidationError, match=r"--train-batch-size \(3\) must be a multiple of --train-processes \(2\)"):
        make_settings(train_launcher="accelerate", train_processes=2, train_batch_size=3)
    with pytest.raises(ValidationError, match="--accelerate-config .*missing.yaml is not a file"):
        make_settings(train_launcher="accelerate", accelerate_config=tmp_path / "missing.yaml")
    with pytest.raises(ValidationError, match="--accelerate-config needs --train-launcher accelerate"):
        (tmp_path / "fsdp.yaml").write_text("distributed_type: FSDP\n")
        make_settings(accelerate_config=tmp_path / "fsdp.yaml")
    settings = make_settings(train_launcher="accelerate", train_processes=2, train_batch_size=4)
    assert settings.training_config.train_processes == 2


def test_the_launch_command() -> None:
    ddp = Launcher(2).command(Path("/w/job.json"), 29999)
    assert ddp[1:3] == ["-m", "accelerate.commands.launch"]
    assert ddp[ddp.index("--num_processes") + 1] == "2" and ddp[ddp.index("--main_process_port") + 1] == "29999"
    assert "--multi_gpu" in ddp and "--config_file" not in ddp
    assert ddp[-3:] == ["-m", "hitl_app.training.launched", "/w/job.json"]
    single = Launcher(1).command(Path("/w/job.json"), 29999)
    assert "--multi_gpu" not in single
    # An admin's config file (FSDP, DeepSpeed) decides the distribution; the process count still comes from the flag.
    fsdp = Launcher(4, Path("/etc/fsdp.yaml")).command(Path("/w/job.json"), 29999)
    assert fsdp[fsdp.index("--config_file") + 1] == "/etc/fsdp.yaml" and "--multi_gpu" not in fsdp
    assert fsdp[fsdp.index("--num_processes") + 1] == "4"


@pytest.mark.distributed
def test_two_processes_train_the_adapter_one_process_trains(make_settings, tmp_path: Path) -> None:
    import torch

    single = make_settings(**ROUND, feedback_dir=tmp_path / "a" / "feedback", checkpoints_dir=tmp_path / "a" / "checkpoints")
    launched = make_settings(
        **ROUND,
        train_launcher="accelerate",
        train_processes=2,
        feedback_dir=tmp_path / "b" / "feedback",
        checkpoints_dir=tmp_path / "b" / "checkpoints",
    )
    steps: list[tuple[float, str]] = []
    for settings in (single, launched):
        _judge(FeedbackStore(settings.feedback_dir))
        runner = RoundRunner(settings, str(settings.base_model))
        if settings is launched:
            shown = runner._progress
            runner._progress = lambda fraction, message: (steps.append((fraction, message)), shown(fraction, message))
        assert runner.run("test") == "v0001"

    # Rank 0's steps reached the status file's progress bar, in order.
    messages = [message for _, message in steps]
    assert any(m.startswith("SFT: step") for m in messages) and any(m.startswith("DPO: step") for m in messages)
    assert [f for f, _ in steps] == sorted(f for f, _ in steps)

    registry = Registry(launched.checkpoints_dir)
    assert registry.versions() == ["v0001"]  # published once, not once per process
    manifest = registry.manifest("v0001")
    assert manifest.config["train_launcher"] == "accelerate" and manifest.config["train_processes"] == 2
    reference = Registry(single.checkpoints_dir).manifest("v0001")
    assert manifest.metrics.sft_steps == reference.metrics.sft_steps > 0
    assert manifest.metrics.preference.steps == reference.metrics.preference.steps > 0
    assert manifest.metrics.preference.batch_size == reference.metrics.preference.batch_size == 2
    assert manifest.metrics.train_loss_after == pytest.approx(reference.metrics.train_loss_after, rel=1e-3)

    one, two = _adapter(single), _adapter(launched)
    assert one.keys() == two.keys()
    moved = sum(float(t.abs().sum()) for name, t in one.items() if "lora_B" in name)
    assert moved > 0  # the round trained (LoRA's B starts at zero)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-3, atol=1e-5, msg=name)


# FSDP (version 2) over two CPU processes: what an admin's `accelerate config` file selects.
FSDP_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
use_cpu: true
num_machines: 1
num_processes: 2
mixed_precision: 'no'
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_cpu_ram_efficient_loading: false
  fsdp_offload_params: false
  fsdp_reshard_after_forward: true
"""


@pytest.mark.distributed
def test_fsdp_from_an_accelerate_config_trains_the_adapter_one_process_trains(make_settings, tmp_path: Path) -> None:
    import torch

    config = tmp_path / "fsdp.yaml"
    config.write_text(FSDP_CONFIG)
    single = make_settings(**ROUND, feedback_dir=tmp_path / "a" / "feedback", checkpoints_dir=tmp_path / "a" / "checkpoints")
    sharded = make_settings(
        **ROUND, train_launcher="accelerate", train_processes=2, accelerate_config=config,
        feedback_dir=tmp_path / "b" / "feedback", checkpoints_dir=tmp_path / "b" / "checkpoints",
    )  # fmt: skip
    for settings in (single, sharded):
        _judge(FeedbackStore(settings.feedback_dir))
        assert RoundRunner(settings, str(settings.base_model)).run("test") == "v0001"
    assert Registry(sharded.checkpoints_dir).versions() == ["v0001"]
    one, two = _adapter(single), _adapter(sharded)
    assert one.keys() == two.keys()
    for name in one:  # whole tensors, gathered from the shards, not one process's shard
        torch.testing.assert_close(two[name], one[name], rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.distributed
def test_a_failed_process_fails_the_round_and_publishes_nothing(
    make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(**ROUND, train_launcher="accelerate", train_processes=2)
    _judge(FeedbackStore(settings.feedback_dir))
    runner = RoundRunner(settings, str(settings.base_model))
    monkeypatch.setenv(FAULT_ENV, "rank1")
    with pytest.raises(LaunchFailed, match="^the launched training failed: rank 1: RuntimeError: injected trainer fault in the rank1 stage$"):
        runner.run("test")
    # A process killed outright writes nothing; torchrun stops the other and the round fails alike.
    monkeypatch.setenv(FAULT_ENV, "rank1-kill")
    with pytest.raises(LaunchFailed, match="^the launched training failed: exit status 1, no process reported an error$"):
        runner.run("test")
    registry = Registry(settings.checkpoints_dir)
    assert registry.versions() == [] and registry.active().version == BASE_VERSION
    # The kept base has no adapter left on it: the next round (the fault gone) trains and publishes.
    monkeypatch.delenv(FAULT_ENV)
    assert runner.run("test") == "v0001"
    # A pair from each ranking and from each edit (the edited text over the answer it corrects).
    assert registry.manifest("v0001").metrics.rows["dpo"] == 2 * len(QUESTIONS)
