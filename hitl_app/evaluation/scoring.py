"""Log-probabilities of given answers under a model, through the chat template.

Used to check that a version learned what clinicians taught it (the mean log-prob of their
edited answers rises) and by later evaluation code.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..core.chat import Message


@torch.no_grad()
def completion_logprob(
    model, tokenizer, prompt: list[Message], completion: str, reduction: Literal["mean", "sum"] = "mean"
) -> float:
    """Log-probability of ``completion`` as the assistant's reply to ``prompt``.

    The prompt is rendered with the tokenizer's chat template and the generation prompt; only the
    completion's tokens are scored. ``reduction="mean"`` gives the per-token mean, comparable
    across answers of different lengths; ``"sum"`` gives the sequence log-probability, the
    quantity DPO's implicit reward is built from.
    """
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full_ids = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": completion}], tokenize=True, return_dict=False
    )
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template does not extend the prompt with the reply; cannot score it")
    device = next(model.parameters()).device
    ids = torch.tensor([full_ids], device=device)
    logits = model(input_ids=ids).logits[0, :-1].float()  # (T-1, V): position t predicts token t+1
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = ids[0, 1:]
    token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    scored = token_lp[len(prompt_ids) - 1 :]
    return (scored.sum() if reduction == "sum" else scored.mean()).item()
