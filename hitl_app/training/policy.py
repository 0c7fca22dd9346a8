"""The policy's training in a round: SFT, then the preference stage, on one adapter.

The trainer process runs it in place (``--train-launcher single``), and each process of a
launched round runs the same function (``launched``), so both paths train alike.
"""

from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from ..versions.manifest import PreferenceMetrics
from .preference import train_preference
from .sft import SFTResult, TrainConfig, train_sft

# Called with (stage, fraction of that stage done, message); stage is "sft" or "preference".
StageProgress = Callable[[str, float, str], None]


class PolicyRows(BaseModel):
    """What the policy trains on in one round: SFT rows (new, and replayed ones seen once) and the
    preference stage's method and rows. JSON-ready, so a launched round can take it from a file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sft_new: list[dict] = Field(default_factory=list)
    sft_replay: list[dict] = Field(default_factory=list)
    method: str | None = None  # "dpo", "kto", or None for no preference stage
    preference: list[dict] = Field(default_factory=list)
    beta: float = 0.1


def train_policy(
    model,
    tokenizer,
    rows: PolicyRows,
    cfg: TrainConfig,
    progress: StageProgress | None = None,
    callbacks: list | None = None,
) -> tuple[SFTResult | None, PreferenceMetrics | None]:
    """Train the adapter of ``model`` (a ``PeftModel``, see ``sft.attach_adapter``) in place: SFT
    on ``rows``' SFT rows, then DPO or KTO against the base; each stage only if it has rows.

    Neither stage runs an evaluation pass: their figures come from the training steps' logs.

    Args:
        model: the policy with its trainable adapter.
        tokenizer: its tokenizer, with a chat template.
        rows: the round's rows.
        cfg: the round's settings (``cfg.batch_size`` is per process).
        progress: called after every step with the stage, its fraction done, and a message.
        callbacks: more ``TrainerCallback``s for both stages.
    """

    def reporter(stage: str):
        return None if progress is None else (lambda fraction, message: progress(stage, fraction, message))

    sft = None
    if rows.sft_new or rows.sft_replay:
        sft = train_sft(
            model,
            tokenizer,
            rows.sft_new,
            cfg,
            progress=reporter("sft"),
            replay=rows.sft_replay,
            eval_losses=False,
            callbacks=callbacks,
        )
    preference = None
    if rows.method is not None:
        preference = train_preference(
            model,
            tokenizer,
            rows.method,
            rows.preference,
            cfg,
            beta=rows.beta,
            progress=reporter("preference"),
            eval_after=False,
            reference="base",
            callbacks=callbacks,
        )
    return sft, preference
