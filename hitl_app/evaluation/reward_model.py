"""The reward model as a scorer: a sequence-classification head on the base, scoring whole chats.

A reward model is the base loaded as ``AutoModelForSequenceClassification`` with one label (a
linear ``score`` head on the last non-pad token's hidden state), with a LoRA adapter and a
trained copy of that head (``training.reward``). Its score of an answer is one float: higher is
more like the answers clinicians preferred.

Scoring formats a chat exactly as TRL 1.16's ``RewardTrainer`` formats a conversational
preference row with an explicit prompt: the prompt messages followed by the one assistant
message, rendered and tokenized in one ``tokenizer.apply_chat_template(..., tokenize=True)``
call, with no generation prompt and no extra end-of-sequence token (TRL adds one only to plain
text rows). Batches are right-padded like TRL's ``DataCollatorForPreference``, so every real
token keeps the position it has alone, and the model reads its score off the last token that is
not the pad token, as it did in training.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ..core.chat import Message
from ..versions.registry import REWARD_SUBDIR  # noqa: F401  (re-exported: a reward adapter's folder in a version's)
from .logprobs import check_fits, right_padded
from .model_view import device_of
from .preference_accuracy import _reply_text, check_pairs

log = logging.getLogger(__name__)

# The seed of the untrained score head, so two loads of a base give the same untrained model.
HEAD_SEED = 0
# The keys a causal-LM checkpoint loaded for sequence classification is expected to lack (the new
# head) or to have in excess (the language-model head, when it is not tied to the embeddings).
_EXPECTED_MISSING = re.compile(r"^score\.")
_EXPECTED_UNEXPECTED = re.compile(r"^lm_head\.")
# The fewest tokens a batch's conversations must share before they are run once as a cache: below
# that the extra forward pass costs more than it saves.
MIN_SHARED_PREFIX = 8


@dataclass(frozen=True)
class RewardAccuracy:
    """Preference pairs under the reward model.

    Args:
        accuracy: share of pairs whose chosen answer scores strictly higher (ties count as wrong,
            as in TRL's logged ``accuracy``).
        mean_margin: mean of score(chosen) - score(rejected).
        n: number of pairs.
    """

    accuracy: float
    mean_margin: float
    n: int


@contextmanager
def _report_captured(source: str) -> Iterator[list[str]]:
    """Hold back transformers' LOAD REPORT of ``source`` instead of printing it.

    The report of a causal LM loaded for sequence classification always lists the new ``score``
    head as MISSING, which is expected; the caller decides from the loading info whether the
    captured report says anything else and is worth showing after all.
    """
    captured: list[str] = []

    class _Hold(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = record.getMessage()
            if "LOAD REPORT" in message and source in message:
                captured.append(message)
                return False
            return True

    hold = _Hold()
    target = logging.getLogger("transformers.modeling_utils")
    target.addFilter(hold)
    try:
        yield captured
    finally:
        target.removeFilter(hold)


def _only_expected(info: dict) -> bool:
    """Whether the loading info lists nothing beyond the fresh head and the dropped LM head."""
    missing = info.get("missing_keys") or []
    unexpected = info.get("unexpected_keys") or []
    return (
        all(_EXPECTED_MISSING.search(k) for k in missing)
        and all(_EXPECTED_UNEXPECTED.search(k) for k in unexpected)
        and not info.get("mismatched_keys")
        and not info.get("error_msgs")
    )


def _pad_id_of(source: str, config) -> int | None:
    """The pad id TRL's RewardTrainer will use: the tokenizer's pad token, else its eos token."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError):  # a checkpoint without a tokenizer: fall back on the model's own ids
        tokenizer = None
    if tokenizer is not None:
        for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
            if value is not None:
                return int(value)
    text = config.get_text_config()
    for value in (text.pad_token_id, text.eos_token_id):
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return None


def init_score_head(model, seed: int = HEAD_SEED) -> None:
    """Set the ``score`` head of a sequence-classification model to a seeded normal draw.

    transformers draws a missing head from the global random state; drawing it from a private,
    seeded generator (with the model's own ``initializer_range``) makes every load of a base the
    same untrained reward model, whatever ran before.
    """
    head = model.score
    std = getattr(model.config.get_text_config(), "initializer_range", 0.02)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        draw = torch.randn(head.weight.shape, generator=generator, dtype=torch.float32) * std
        head.weight.copy_(draw.to(head.weight.dtype))
        if getattr(head, "bias", None) is not None:
            head.bias.zero_()


def load_reward_base(
    source: str | Path,
    *,
    device: str = "cpu",
    load_in_4bit: bool = False,
    dtype: torch.dtype | None = None,
    seed: int = HEAD_SEED,
):
    """Load ``source`` (a causal LM's folder or hub id) as a one-label sequence classifier.

    The ``score`` head is new and set by ``init_score_head(seed)``; ``config.pad_token_id`` is the
    id the RewardTrainer pads with (the tokenizer's pad token, else its eos), because the model
    finds the last real token of each row by it. Transformers' LOAD REPORT, which would list the
    new head as missing, is replaced by one log line (it is still shown if it lists anything else).

    Args:
        source: the base model.
        device: ``cpu`` or ``cuda``.
        load_in_4bit: nf4 weights with bf16 compute through bitsandbytes (CUDA only); the
            ``score`` head stays unquantised, as LoRA training of it needs.
        dtype: the weights' dtype; default bf16 on CUDA, fp32 on the CPU.
        seed: the seed of the untrained head.

    Returns:
        The model in eval mode, on ``device``.
    """
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    source = str(source)
    kwargs: dict[str, Any] = {"num_labels": 1, "output_loading_info": True}
    if load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
            llm_int8_skip_modules=["score"],
        )
        kwargs["device_map"] = {"": 0}
        kwargs["dtype"] = dtype or torch.bfloat16
    else:
        kwargs["dtype"] = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
    with _report_captured(source) as captured:
        model, info = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    if captured and not _only_expected(info):
        for report in captured:
            log.warning("%s", report)
    if not load_in_4bit:
        model.to(device)
    init_score_head(model, seed)
    model.config.get_text_config().pad_token_id = _pad_id_of(source, model.config)
    model.eval()
    log.info(
        "reward base %s: sequence classification, new score head (seed %d), pad id %s",
        source, seed, model.config.get_text_config().pad_token_id,
    )  # fmt: skip
    return model


def chat_ids(tokenizer, messages: list[Message]) -> list[int]:
    """The token ids of one conversation as TRL's RewardTrainer tokenizes a conversational row:
    ``apply_chat_template(messages, tokenize=True, return_dict=True)``, no generation prompt."""
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
    return list(encoded["input_ids"])


def _model_pad_id(model) -> int:
    pad = model.config.get_text_config().pad_token_id
    if pad is None:
        raise ValueError("the reward model has no config.pad_token_id; load it with load_reward_base")
    return int(pad)


def shared_prefix(rows: list[list[int]]) -> int:
    """How many leading tokens every row has in common, leaving each row at least one of its own."""
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def _scores_of_batch(model, rows: list[list[int]], pad_id: int, device) -> list[float]:
    """One forward pass over a batch; a prefix that every row shares is run once, as a key/value cache."""
    shared = shared_prefix(rows) if len(rows) > 1 else 0
    if shared < MIN_SHARED_PREFIX:
        ids, mask = right_padded(rows, pad_id)
        # use_cache=False as in TRL's compute_loss: a score needs no key/value cache.
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        return [float(x) for x in logits[:, 0].float()]
    # The candidates of one answer share the system prompt and the question: run that once and
    # score only each answer's own tokens on top of it. The suffixes are right-padded after the
    # shared tokens, so every real token keeps its position and the head still reads the last
    # token that is not the pad token.
    prefix = torch.tensor([rows[0][:shared]], device=device)
    cache = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True).past_key_values
    cache.batch_repeat_interleave(len(rows))
    ids, mask = right_padded([r[shared:] for r in rows], pad_id)
    mask = torch.cat([torch.ones((len(rows), shared), dtype=mask.dtype), mask], dim=1)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=cache, use_cache=True).logits
    return [float(x) for x in logits[:, 0].float()]


@torch.no_grad()
def score_conversations(model, tokenizer, conversations: list[list[Message]], batch_size: int = 8) -> list[float]:
    """One reward per conversation (each ending with the assistant's answer), in input order.

    Each distinct conversation is scored once, in batches in token order, so that conversations
    with the same prompt (an answer's candidates, a pair's two answers) share a batch and their
    common prefix is computed once (``MIN_SHARED_PREFIX``). Batches are right-padded with the
    model's pad id and run under ``no_grad`` in eval mode (the model's mode is put back afterwards).

    Raises:
        ValueError: ``batch_size`` < 1, a conversation longer than the model's context, or a model
            without a pad id.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if not conversations:
        return []
    rows = [chat_ids(tokenizer, c) for c in conversations]
    check_fits(model, [len(r) for r in rows], "conversation")
    pad_id = _model_pad_id(model)
    device = device_of(model)
    # Each distinct conversation is scored once, so identical ones score exactly the same.
    distinct = sorted({tuple(r) for r in rows})
    scored: dict[tuple[int, ...], float] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(distinct), batch_size):
            batch = distinct[start : start + batch_size]
            scored.update(zip(batch, _scores_of_batch(model, [list(r) for r in batch], pad_id, device)))
    finally:
        model.train(was_training)
    return [scored[tuple(r)] for r in rows]


def score_completions(
    model, tokenizer, prompt: list[Message], completions: list[str], batch_size: int = 8
) -> list[float]:
    """The reward of each completion as the assistant's answer to ``prompt``, in input order.

    Args:
        model: a reward model (``load_reward_base``, possibly with a reward adapter).
        tokenizer: its tokenizer, with the chat template it was trained with.
        prompt: the chat messages before the answer (system and user).
        completions: the answers to score.
        batch_size: sequences per forward pass.
    """
    conversations = [[*prompt, {"role": "assistant", "content": text}] for text in completions]
    return score_conversations(model, tokenizer, conversations, batch_size)


def score_pairs(model, tokenizer, pairs: list[dict], batch_size: int = 8) -> list[tuple[float, float]]:
    """The (chosen, rejected) rewards of each preference pair, in input order.

    Args:
        pairs: DPO rows ``{"prompt": [messages], "chosen": [assistant msg], "rejected": [...]}``
            (a plain string is accepted for chosen/rejected).

    Raises:
        ValueError: a malformed pair (all are listed).
    """
    check_pairs(pairs)
    conversations = [
        [*pair["prompt"], {"role": "assistant", "content": _reply_text(pair[key])}]
        for key in ("chosen", "rejected")
        for pair in pairs
    ]
    scores = score_conversations(model, tokenizer, conversations, batch_size)
    return list(zip(scores[: len(pairs)], scores[len(pairs) :]))


def pairwise_accuracy(model, tokenizer, pairs: list[dict], batch_size: int = 8) -> RewardAccuracy:
    """Share of preference pairs whose chosen answer the reward model scores higher, and the mean margin.

    The counterpart of ``preference_accuracy`` (the policy's implicit DPO reward) for an explicit
    reward model, on the same rows.

    Raises:
        ValueError: no pairs, or a malformed pair (all are listed).
    """
    if not pairs:
        raise ValueError("no preference pairs to evaluate")
    margins = torch.tensor([chosen - rejected for chosen, rejected in score_pairs(model, tokenizer, pairs, batch_size)])
    return RewardAccuracy(float((margins > 0).float().mean()), float(margins.mean()), len(pairs))
