"""The least time a round's training can take on this machine: its arithmetic at the CPU's best matmul rate.

Training a LoRA on a frozen base does, per token of a row, one forward pass (2 FLOPs per weight
that the token meets) and one backward pass through the activations (2 more); the frozen weights
get no gradient, and the adapter's own weights are a rounding error at rank 16. A forward pass
with no gradient (DPO's reference, an evaluation) costs the 2 alone. Attention adds, per layer,
``2 * T^2 * hidden`` for a causal pass over ``T`` tokens (scores and weighted sum, half of each
masked). The policy's tokens also meet the output projection (vocabulary x hidden); a reward
model's meet only its one-number score head.

Dividing a round's training FLOPs by the rate of a large fp32 matrix product on the training
cores gives a floor that no implementation of the same recipe (same rows, steps and dtype) beats
on this CPU. The model's own products are smaller and run below that rate, so a second figure
divides by the rate of the model's own forward pass over a typical row, without gradients: what
PyTorch achieves on these shapes, and what a training step (a forward and a backward pass of the
same shapes) cannot beat without faster kernels for them. The floors count the
SFT, preference and reward-model stages; an RL stage and the evaluation come on top. The stage
counts (SFT steps, preference rows, reward pairs) come from the round's manifest and the tokens
per row from the rows the benchmark's judgements make, tokenised with the chat template as TRL does.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean
from typing import Any, Iterable

from ..feedback.ledger import Judgement
from ..feedback.training_rows import rows_for

# Size of the square fp32 product timed for the CPU's best rate: large enough that the rate no
# longer grows with it, small enough to time in about a second on two cores.
GEMM_SIZE = 2048


@dataclass(frozen=True)
class ModelSize:
    """What a token costs in a model: its weights outside the embeddings, its output projection, its shape."""

    body: int  # weights of the decoder layers and final norm, met once per token
    head: int  # vocabulary x hidden: the output projection every policy token meets
    layers: int
    hidden: int

    @classmethod
    def of(cls, base: Path | str) -> "ModelSize":
        """Count the weights of the causal LM in ``base`` (its config only: built on the meta device)."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(base))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        embeddings = model.get_input_embeddings().weight.numel()
        body = sum(p.numel() for p in model.parameters()) - embeddings
        if not getattr(config, "tie_word_embeddings", False):
            body -= model.get_output_embeddings().weight.numel()
        return cls(body=body, head=config.vocab_size * config.hidden_size, layers=config.num_hidden_layers, hidden=config.hidden_size)

    def forward_flops(self, tokens: float, head: bool = True) -> float:
        """FLOPs of one forward pass over a row of ``tokens`` tokens (``head``: through the output projection)."""
        weights = self.body + (self.head if head else 0)
        return 2.0 * weights * tokens + 2.0 * self.layers * tokens * tokens * self.hidden

    def train_flops(self, tokens: float, head: bool = True) -> float:
        """FLOPs of one LoRA training step on a row: the forward pass and the backward pass through the activations."""
        return 2.0 * self.forward_flops(tokens, head)


@dataclass(frozen=True)
class RowTokens:
    """Mean tokens per row of each kind the round trains on."""

    sft: float  # prompt + completion
    pair: float  # prompt + chosen and prompt + rejected, together


def row_tokens(tokenizer, judgements: Iterable[Judgement]) -> RowTokens:
    """Mean tokens per SFT row and per preference pair of the rows ``judgements`` make, chat template applied.

    Raises:
        ValueError: the judgements make no SFT row or no pair.
    """

    def length(prompt: list[dict], reply: list[dict]) -> int:
        return len(tokenizer.apply_chat_template(prompt + reply, return_dict=True)["input_ids"])

    sft, pairs = [], []
    for judgement in judgements:
        made = rows_for(judgement)
        sft += [length(row["prompt"], row["completion"]) for row in made.sft]
        pairs += [length(row["prompt"], row["chosen"]) + length(row["prompt"], row["rejected"]) for row in made.dpo]
    if not sft or not pairs:
        raise ValueError(f"the judgements make {len(sft)} SFT rows and {len(pairs)} pairs; both are needed")
    return RowTokens(sft=mean(sft), pair=mean(pairs))


def round_flops(
    size: ModelSize, tokens: RowTokens, sft_steps: int, dpo_rows: int, kto_rows: int, reward_pairs: int
) -> dict[str, float]:
    """Training FLOPs of each stage of a round at batch 1, and their total.

    SFT trains one row a step; DPO trains the policy on both answers of a pair and runs the
    reference forward on both; KTO does both on one answer a row (its KL term's mismatched
    pairs are left out, so this is a lower bound); the reward model trains on both answers of a
    pair without the output projection.
    """
    half_pair = tokens.pair / 2  # each answer of a pair is its own sequence
    flops = {
        "sft": sft_steps * size.train_flops(tokens.sft),
        "dpo": dpo_rows * 2 * (size.train_flops(half_pair) + size.forward_flops(half_pair)),
        "kto": kto_rows * (size.train_flops(tokens.sft) + size.forward_flops(tokens.sft)),
        "reward": reward_pairs * 2 * size.train_flops(half_pair, head=False),
    }
    flops["total"] = sum(flops.values())
    return flops


def gemm_gflops(threads: int, size: int = GEMM_SIZE, repeats: int = 8) -> float:
    """The best rate of a ``size``-square fp32 matrix product on ``threads`` threads, in GFLOP/s."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b  # first call: allocation and kernel choice
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(before)
    return 2.0 * size**3 / best / 1e9


def forward_gflops(
    base: Path | str, size: ModelSize, tokenizer, judgement: Judgement, threads: int, repeats: int = 5
) -> float:
    """The best rate of the base's fp32 forward pass (no gradient) over ``judgement``'s first SFT row, in GFLOP/s
    (``size``: the base's, from ``ModelSize.of``).

    Raises:
        ValueError: the judgement makes no SFT row.
    """
    import torch
    from transformers import AutoModelForCausalLM

    made = rows_for(judgement)
    if not made.sft:
        raise ValueError(f"a {judgement.feedback.action} judgement makes no SFT row to time the forward pass on")
    row = made.sft[0]
    ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], return_dict=True, return_tensors="pt")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            model(input_ids=ids)  # first call: allocation and kernel choice
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                model(input_ids=ids)
                best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(before)
    return size.forward_flops(ids.shape[1]) / best / 1e9


@dataclass(frozen=True)
class ComputeFloor:
    """A round's training arithmetic and the least time it takes at this CPU's best fp32 rate
    (``floor_s``) and at the rate of the model's own forward pass (``forward_floor_s``)."""

    sft_tokens_per_row: float
    pair_tokens: float
    gflop: dict[str, float]
    gemm_gflops: float
    forward_gflops: float
    threads: int
    floor_s: float
    forward_floor_s: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy for the results file."""
        return asdict(self)


def compute_floor(
    base: Path | str, tokenizer, judgements: Iterable[Judgement], metrics: dict[str, Any], threads: int
) -> ComputeFloor:
    """The floor of a round whose manifest metrics are ``metrics``, trained on rows like ``judgements``'.

    Args:
        base: the base model's folder (its config gives the weights).
        tokenizer: its tokenizer, with the chat template.
        judgements: judgements whose rows are typical of the round's (new and replayed).
        metrics: the round's manifest ``metrics`` (``sft_steps``, ``preference.rows``, ``reward_model.pairs``).
        threads: the cores training may use.
    """
    judgements = list(judgements)
    tokens = row_tokens(tokenizer, judgements)
    preference = metrics.get("preference") or {}
    rows = {preference.get("method"): preference.get("rows") or 0}
    reward_pairs = (metrics.get("reward_model") or {}).get("pairs") or 0
    size = ModelSize.of(base)
    flops = round_flops(size, tokens, metrics.get("sft_steps") or 0, rows.get("dpo", 0), rows.get("kto", 0), reward_pairs)
    rate = gemm_gflops(threads)
    typical = next(j for j in judgements if rows_for(j).sft)  # row_tokens found one
    forward = forward_gflops(base, size, tokenizer, typical, threads)
    return ComputeFloor(
        sft_tokens_per_row=tokens.sft,
        pair_tokens=tokens.pair,
        gflop={stage: value / 1e9 for stage, value in flops.items()},
        gemm_gflops=rate,
        forward_gflops=forward,
        threads=threads,
        floor_s=flops["total"] / 1e9 / rate,
        forward_floor_s=flops["total"] / 1e9 / forward,
    )
