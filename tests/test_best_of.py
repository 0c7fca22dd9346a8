"""--best-of: N answers sampled in one batched call, the K best by the reward model shown, all N stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitl_app.core.errors import UserError
from hitl_app.feedback.records import BASE_VERSION, Feedback, Generation, Sampling
from hitl_app.feedback.store import FeedbackStore
from hitl_app.service.base import Caller
from hitl_app.service.views import AskReply
from hitl_app.training.round import RoundRunner

GREEDY = Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=8)
CLINICIAN = Caller("dr-a", "clinician")


@pytest.fixture
def service(make_settings, tiny_base: Path):
    """A service serving a version with a reward model, sampling 4 answers to show the best 2."""
    from hitl_app.app import create_service

    settings = make_settings(
        reward_model="on", reward_epochs=1, gate="off", candidates=2, best_of=4, temperature=0.9, auto_retrain=False
    )
    store = FeedbackStore(settings.feedback_dir)
    for question in ("I have crushing chest pain.", "My face droops on one side.", "I cannot stop the bleeding."):
        gen = Generation(reviewer="dr-a", prompt=question, candidates=["Call 999 now.", "Rest at home."],
                         version=BASE_VERSION, sampling=GREEDY, prompt_tokens=5)  # fmt: skip
        store.append(gen)
        store.append(Feedback(reviewer="dr-a", generation_id=gen.id, action="rank", ranking=[[0], [1]]))
    assert RoundRunner(settings, str(tiny_base)).run("test") == "v0001"
    service = create_service(settings)
    yield service
    service.close()
    service.models.close()
    service.trainer.stop()


def test_best_of_samples_n_in_one_call_stores_all_and_shows_the_k_best(service, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    generate = service.models.generate

    def counting(prompt, k=1, **kwargs):
        calls.append(k)
        return generate(prompt, k=k, **kwargs)

    monkeypatch.setattr(service.models, "generate", counting)
    gen = service.ask("Is a headache after a fall serious?", CLINICIAN)
    assert calls == [4]  # one batched call for all N
    assert gen.version == "v0001" and gen.reward_version == "v0001"
    assert len(gen.candidates) == 2 and len(gen.hidden) == 2  # all N stored
    assert len(gen.rewards) == 2 and len(gen.hidden_rewards) == 2 and len(gen.flags) == 2
    assert gen.rewards == sorted(gen.rewards, reverse=True)
    assert min(gen.rewards) >= max(gen.hidden_rewards)  # the K best are the ones shown
    # what the reward model said of each is what the scorer says of it now
    _, again = service.rewards.score(gen.version, gen.prompt, gen.system_prompt, gen.candidates + gen.hidden)
    assert again == pytest.approx(gen.rewards + gen.hidden_rewards, abs=1e-3)
    reply = AskReply.of(gen).to_json()
    assert reply["hidden"] == 2 and reply["rewards"] == gen.rewards
    # the hidden answers cannot be judged: a clinician never saw them
    with pytest.raises(UserError, match="candidate 2 does not exist; this generation has 2"):
        service.accept(gen.id, CLINICIAN, candidate=2)
    stored = service.generation(gen.id)
    assert stored.hidden == gen.hidden


def test_best_of_is_refused_without_what_it_needs(make_settings) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="--best-of must be 0"):
        make_settings(candidates=2, best_of=2, temperature=0.9)
    with pytest.raises(ValidationError, match="needs --temperature > 0 and --reward-model on"):
        make_settings(candidates=2, best_of=4, temperature=0.9, reward_model="off")


def test_candidates_can_be_ordered_by_the_reward_model(service) -> None:
    service.settings.best_of = 0  # this test is about ordering only
    gen = service.ask("Should I worry about a rash after antibiotics?", CLINICIAN, 2, by_reward=True)
    assert len(gen.candidates) == 2 and gen.hidden == []
    assert gen.rewards == sorted(gen.rewards, reverse=True)
    streamed = list(service.ask_stream("What helps a tension headache?", CLINICIAN, 2, by_reward=True))
    texts, _, last = streamed[-1]
    assert last is not None and texts == last.candidates and last.rewards == sorted(last.rewards, reverse=True)
