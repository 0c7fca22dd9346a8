"""The round's arithmetic floor (``bench/compute_floor.py``): weight counts, FLOPs per stage, the rate and the verdict."""

from __future__ import annotations

import math

import pytest

from hitl_app.bench import compute_floor as cf
from hitl_app.bench.compute_floor import ModelSize, RowTokens, round_flops, row_tokens
from hitl_app.bench.report import _floor_rows, evaluate_goals
from hitl_app.feedback.ledger import Judgement
from hitl_app.feedback.records import Feedback, Generation, Sampling

SYSTEM = "Answer briefly."
QUESTION = "What helps a tension headache?"
ANSWER = "Rest and fluids."
EDITED = "Rest, fluids, and simple analgesia; seek care if it is sudden and severe."


def _judgement(action: str, **extra) -> Judgement:
    generation = Generation(
        reviewer="r", prompt=QUESTION, system_prompt=SYSTEM, candidates=[ANSWER], version="base",
        sampling=Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=32), prompt_tokens=10,
    )
    return Judgement(0, Feedback(reviewer="r", generation_id=generation.id, action=action, **extra), generation)


def test_model_size_counts_every_weight_once(tiny_base) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    size = ModelSize.of(tiny_base)
    config = model.config
    assert config.tie_word_embeddings  # the head is the embedding: counted in the weights once
    assert size.body + config.vocab_size * config.hidden_size == sum(p.numel() for p in model.parameters())
    assert size.head == config.vocab_size * config.hidden_size
    assert (size.layers, size.hidden) == (config.num_hidden_layers, config.hidden_size)


def test_flops_per_pass_by_hand() -> None:
    size = ModelSize(body=10, head=5, layers=2, hidden=3)
    # 2 FLOPs per weight met per token (4 tokens), plus causal attention 2 * layers * T^2 * hidden.
    assert size.forward_flops(4) == 2 * 15 * 4 + 2 * 2 * 16 * 3 == 312
    assert size.forward_flops(4, head=False) == 2 * 10 * 4 + 192
    assert size.train_flops(4) == 2 * 312


def test_round_flops_by_stage() -> None:
    size = ModelSize(body=10, head=5, layers=2, hidden=3)
    flops = round_flops(size, RowTokens(sft=4, pair=8), sft_steps=3, dpo_rows=2, kto_rows=1, reward_pairs=5)
    assert flops["sft"] == 3 * size.train_flops(4)
    # each answer of a pair (4 tokens) is trained on and run through the reference
    assert flops["dpo"] == 2 * 2 * (size.train_flops(4) + size.forward_flops(4))
    assert flops["kto"] == size.train_flops(4) + size.forward_flops(4)
    assert flops["reward"] == 5 * 2 * size.train_flops(4, head=False)
    assert flops["total"] == flops["sft"] + flops["dpo"] + flops["kto"] + flops["reward"]


def test_row_tokens_are_the_chat_templated_rows(tiny_base) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    edit = _judgement("edit", text=EDITED)  # one SFT row (the edit) and one pair (edit over answer)
    tokens = row_tokens(tokenizer, [edit])

    def length(reply: str) -> int:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION},
                    {"role": "assistant", "content": reply}]
        return len(tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"])

    assert tokens.sft == length(EDITED)
    assert tokens.pair == length(EDITED) + length(ANSWER)
    with pytest.raises(ValueError, match="0 pairs"):
        row_tokens(tokenizer, [_judgement("accept")])


def test_the_floor_is_the_arithmetic_at_the_measured_rate(tiny_base, monkeypatch) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    monkeypatch.setattr(cf, "gemm_gflops", lambda threads: 0.5)
    monkeypatch.setattr(cf, "forward_gflops", lambda base, size, tokenizer, judgement, threads: 0.25)
    metrics = {"sft_steps": 6, "preference": {"method": "dpo", "rows": 2}, "reward_model": {"pairs": 2}}
    floor = cf.compute_floor(tiny_base, tokenizer, [_judgement("edit", text=EDITED)], metrics, threads=2)
    tokens = row_tokens(tokenizer, [_judgement("edit", text=EDITED)])
    expected = round_flops(ModelSize.of(tiny_base), tokens, 6, 2, 0, 2)
    assert floor.gflop["total"] == pytest.approx(expected["total"] / 1e9)
    assert floor.floor_s == pytest.approx(expected["total"] / 1e9 / 0.5)
    assert floor.forward_floor_s == pytest.approx(2 * floor.floor_s)
    assert floor.gflop["kto"] == 0 and floor.threads == 2


def test_rates_are_measured_and_leave_the_thread_count(tiny_base) -> None:
    import torch
    from transformers import AutoTokenizer

    before = torch.get_num_threads()
    rate = cf.gemm_gflops(1, size=256, repeats=2)
    assert math.isfinite(rate) and rate > 0
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    forward = cf.forward_gflops(tiny_base, ModelSize.of(tiny_base), tokenizer, _judgement("edit", text=EDITED), 1, repeats=2)
    assert math.isfinite(forward) and forward > 0
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="reject judgement makes no SFT row"):
        cf.forward_gflops(tiny_base, ModelSize.of(tiny_base), tokenizer, _judgement("reject", reason="Wrong dose."), 1)


def test_the_report_says_whether_the_goal_is_reachable() -> None:
    floor = {"floor_s": 71.0, "gemm_gflops": 110.0, "threads": 2, "forward_floor_s": 150.0, "forward_gflops": 52.0,
             "gflop": {"sft": 3000.0, "dpo": 3100.0, "kto": 0.0, "reward": 1700.0, "total": 7800.0}}
    goals = evaluate_goals({"retrain": {"wall_s": 238.0, "compute_floor": floor}})
    assert goals["retrain_within_60s"] is False and goals["retrain_floor_within_60s"] is False
    rows = _floor_rows(floor, "60 s", goals["retrain_floor_within_60s"])
    assert rows[0][2] == "sft 3000, dpo 3100, reward 1700"  # a stage without work is left out
    assert rows[1][1] == "71.0 s" and "reachable with this recipe: NO" in rows[1][2]
    assert rows[2][1] == "150.0 s" and rows[2][2].startswith("52.0 GFLOP/s")
    assert evaluate_goals({"retrain": {"wall_s": 50.0, "compute_floor": {**floor, "floor_s": 40.0}}})["retrain_floor_within_60s"]
