"""The vLLM backend's settings, server command line and zero adapter, without a vLLM server."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hitl_app.core.config import Settings
from hitl_app.core.errors import UserError
from hitl_app.serving.vllm_server import VllmServerSpec


def test_settings_refuse_a_vllm_backend_that_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist: run `make vllm-env`"):
        Settings(device="cpu", serve_backend="vllm", vllm_python=tmp_path / "missing" / "python")
    with pytest.raises(ValidationError, match="--vllm-url needs --serve-backend vllm"):
        Settings(device="cpu", vllm_url="http://gpu-1:8000")
    with pytest.raises(ValidationError, match="must start with http"):
        Settings(device="cpu", serve_backend="vllm", vllm_url="gpu-1:8000")
    with pytest.raises(ValidationError, match="--vllm-max-loaded must be at least 1"):
        Settings(device="cpu", vllm_max_loaded=0)
    remote = Settings(device="cpu", serve_backend="vllm", vllm_url="http://gpu-1:8000")  # no local vLLM needed
    assert remote.serving_config.vllm_url == "http://gpu-1:8000"


def test_the_server_command_serves_the_base_with_lora_enabled() -> None:
    spec = VllmServerSpec(python=Path("/v/bin/python"), model="/m", max_lora_rank=12, max_loras=5, max_model_len=2048,
                          extra_args=["--dtype", "float32"])  # fmt: skip
    command = spec.command(8123)
    assert command[:3] == ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(command[3::2], command[4::2]))
    assert "--enable-lora" in command and command[-2:] == ["--dtype", "float32"]
    assert command[command.index("--served-model-name") + 1] == "base"
    assert command[command.index("--max-lora-rank") + 1] == "16"  # vLLM's next allowed rank above 12
    assert command[command.index("--port") + 1] == "8123" and flags["--model"] == "/m"
    with pytest.raises(UserError, match="up to 512"):
        VllmServerSpec(python=Path("p"), model="m", max_lora_rank=1000, max_loras=1, max_model_len=64).command(1)


def test_the_identity_adapter_is_zero_of_the_app_shape_and_written_once(tiny_base: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from hitl_app.serving.identity_adapter import WEIGHTS, write_identity_adapter
    from hitl_app.training.sft import TrainConfig
    from tests.helpers import TINY_SETTINGS

    lora = TrainConfig.from_config(Settings(**TINY_SETTINGS).training_config).lora_config()
    folder = write_identity_adapter(str(tiny_base), lora, tmp_path / "identity")
    tensors = load_file(str(folder / WEIGHTS))
    assert tensors and all(float(t.abs().sum()) == 0 for t in tensors.values())
    assert any(name.endswith("lora_A.weight") and t.shape[0] == lora.r for name, t in tensors.items())
    written = (folder / WEIGHTS).stat().st_mtime_ns
    assert write_identity_adapter(str(tiny_base), lora, tmp_path / "identity") == folder
    assert (folder / WEIGHTS).stat().st_mtime_ns == written  # the same base and shape: kept
    other = TrainConfig.from_config(Settings(**TINY_SETTINGS | {"lora_r": 2}).training_config).lora_config()
    write_identity_adapter(str(tiny_base), other, tmp_path / "identity")
    assert next(t for n, t in load_file(str(folder / WEIGHTS)).items() if n.endswith("lora_A.weight")).shape[0] == 2
