"""What the benchmark runs: which benchmarks, how many repeats of each, and where things live."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
BASE_DIR = REPO / "checkpoints" / "base"
DEFAULT_OUT = Path("bench-results/bench.json")
# The question every timed answer (answers, candidates) and the swap's logits check use.
QUESTION = "What are the warning signs of a stroke, and what should someone do if they notice them?"
# Benchmark names for --only, in the order they run. Candidates run before the trainer process
# starts, as they measure serving while the trainer is idle.
BENCHMARKS: tuple[str, ...] = (
    "startup", "store", "phi", "team", "swap", "candidates", "concurrency", "backends", "decode", "safety", "reward", "retrain", "rounds",
    "answers", "teach",
)


@dataclass(frozen=True)
class BenchConfig:
    """How much of each benchmark to run."""

    quick: bool = False
    only: tuple[str, ...] = BENCHMARKS  # the benchmarks to run (--only)
    trained_adapters: bool = True  # swap adapters from real rounds (RoundRunner), else synthetic
    adapter_judgements: int = 4  # judgements per in-process round that makes a swap adapter
    swaps: int = 10  # publish-to-serving measurements, alternating between two versions
    reloads: int = 3  # full reloads to compare with
    retrain_judgements: int = 20  # judgements per trainer-process round (the mix in items.MIX)
    # Share of pair-yielding judgements held out for evaluation. The app holds out 20% (by record
    # id, so which ones varies); the benchmark trains on all N, so a round's rows are exactly the
    # mix's (items.MIX) every run. The round's evaluation then has no held-out feedback to score;
    # its fixed parts (shipped reference answers, probe perplexity, KL, answer length) still run.
    holdout_fraction: float = 0.0
    # Probe prompts of the round's KL estimate (the app's --eval-probe-prompts); None: the app's
    # default. The quick run lowers it: the evaluation before publishing dominates a tiny round.
    eval_probe_prompts: int | None = None
    idle_answers: int = 12  # idle answers per serving thread count (after one warm-up)
    busy_answers: int = 8  # at least this many answers per thread count during retraining
    max_busy_rounds: int = 3  # extra rounds may be queued until busy_answers is reached
    # Keep answering until the busy round ends (the full run); else stop once busy_answers are in
    # and let the round finish alone (the quick run: answers compete with it for the CPU).
    answer_whole_round: bool = True
    max_new_tokens: int = 48  # greedy answers of the answers benchmark
    serve_threads: tuple[int, ...] = (1, 2)
    trainer_threads: int = 1
    round_timeout_s: float = 1200.0
    candidates_k: int = 4  # candidates per question: one batched call vs this many single calls
    candidates_pairs: int = 5  # interleaved (batched, sequential) pairs per length mode, after a warm-up
    candidates_max_new_tokens: int = 64  # sampled answers of the candidates benchmark
    safety_repeats: int = 20  # passes over the evaluation questions timing the safety checks
    decode_prompts: int = 8  # evaluation questions answered by both decode paths, per repetition
    decode_reps: int = 3  # interleaved repetitions over them, per serving thread count
    decode_max_new_tokens: int = 64  # greedy answer length of the decode benchmark
    concurrency_clients: int = 8  # clients asking at the same moment
    concurrency_k: int = 2  # candidates each asks for
    concurrency_rounds: int = 4  # alternating rounds of all-at-once and one-client-in-turn
    concurrency_max_new_tokens: int = 64
    backends_clients: int = 8  # clients asking at the same moment, local against vLLM
    backends_rounds: int = 2  # alternating rounds of all-at-once and one-client-in-turn, per backend
    backends_max_new_tokens: int = 64
    backends_swaps: int = 4  # fresh versions published into each backend
    startup_window_s: float = 300.0  # the first minutes after start-up, answers timed throughout
    startup_think_s: float = 5.0  # a clinician's pause between an answer and the next question
    startup_steady_answers: int = 12  # answers timed once compiling is done
    startup_max_new_tokens: int = 64
    teach_styles: int = 3  # house styles taught (teach.STYLES), each in its own workspace
    teach_rounds: int = 3  # rounds per style
    teach_judgements: int = 20  # edits per round (the app's --retrain-threshold)
    teach_heldout: int = 20  # questions never edited, answered after every round
    # A teaching round trains 45-60 SFT steps and a preference stage at batch 1, then evaluates:
    # 10-15 minutes on 2 busy cores, so the retrain benchmark's limit is too short for it.
    teach_round_timeout_s: float = 3600.0
    team_questions: int = 100_000  # rows of the question set imported into the review queue
    team_next_judgements: int = 10_000  # judgements already made (2 per item) when Next is timed
    team_next_calls: int = 300  # timed Next calls, reviewers taking turns
    team_next_reviewers: int = 30  # reviewers taking those turns (and who made the judgements before)
    team_agreement_items: int = 50_000  # items judged by 2 reviewers each for agreement and export
    team_agreement_reviewers: int = 10  # the pool those 2 reviewers are drawn from
    reward_train_pairs: int = 20  # designed preference pairs a fresh reward model trains on
    reward_heldout_pairs: int = 40  # held-out designed pairs its accuracy is measured on
    reward_score_repeats: int = 10  # timed scorings of 4 candidates

    def __post_init__(self) -> None:
        unknown = [name for name in self.only if name not in BENCHMARKS]
        problems = [f"unknown benchmark(s) {', '.join(unknown)}; expected some of {', '.join(BENCHMARKS)}"] if unknown else []
        if not self.only:
            problems.append("no benchmark selected")
        if not self.serve_threads or min(self.serve_threads) < 1:
            problems.append(f"serve threads must be at least 1 each (got {self.serve_threads})")
        if self.candidates_k < 2:
            problems.append(f"candidates_k must be at least 2 to compare batching (got {self.candidates_k})")
        if self.retrain_judgements < 1 or self.candidates_pairs < 1:
            problems.append("retrain_judgements and candidates_pairs must be at least 1")
        if min(self.teach_styles, self.teach_rounds, self.teach_judgements, self.teach_heldout) < 1:
            problems.append("teach_styles, teach_rounds, teach_judgements and teach_heldout must be at least 1")
        if self.decode_prompts < 1 or self.decode_reps < 1 or self.decode_max_new_tokens < 1:
            problems.append("decode_prompts, decode_reps and decode_max_new_tokens must be at least 1")
        if self.team_next_judgements < 2 or self.team_next_judgements % 2:
            problems.append(f"team_next_judgements must be even and at least 2 (got {self.team_next_judgements})")
        if self.team_next_calls < 1 or min(self.team_next_reviewers, self.team_agreement_reviewers) < 2:
            problems.append("team_next_calls must be at least 1, and each team's reviewers at least 2")
        needed = self.team_next_judgements // 2 + 2 * self.team_next_calls + self.team_next_reviewers
        if self.team_questions < max(needed, self.team_agreement_items) * 1.05:
            problems.append(f"team_questions ({self.team_questions}) leaves too few queued items for the judged, "
                            f"pre-generated and agreement items ({max(needed, self.team_agreement_items)}, plus repeats)")
        if problems:
            raise ValueError("invalid benchmark configuration:\n  - " + "\n  - ".join(problems))

    @classmethod
    def make(
        cls, quick: bool, serve_threads: tuple[int, ...], trainer_threads: int, only: tuple[str, ...] = BENCHMARKS
    ) -> "BenchConfig":
        """The full configuration, or a smoke-test one (about three minutes) with ``quick``.

        Raises:
            ValueError: an unknown benchmark name, or counts that cannot run (all listed at once).
        """
        # Keep the run order whatever order --only named them in.
        ordered = tuple(name for name in BENCHMARKS if name in only) + tuple(n for n in only if n not in BENCHMARKS)
        cfg = cls(serve_threads=serve_threads, trainer_threads=trainer_threads, only=ordered)
        if quick:
            cfg = replace(
                cfg,
                quick=True,
                # Two in-process rounds cost about a minute; a swap only depends on the adapters'
                # shapes, so the smoke run publishes two random adapters of the app's LoRA shape.
                trained_adapters=False,
                swaps=3,
                reloads=1,
                retrain_judgements=2,
                idle_answers=2,
                busy_answers=2,
                max_busy_rounds=1,
                answer_whole_round=False,
                eval_probe_prompts=2,
                max_new_tokens=12,
                round_timeout_s=300.0,
                candidates_pairs=1,
                candidates_max_new_tokens=12,
                safety_repeats=2,
                decode_prompts=2,
                decode_reps=1,
                decode_max_new_tokens=16,
                concurrency_clients=3,
                concurrency_rounds=1,
                concurrency_max_new_tokens=12,
                backends_clients=3,
                backends_rounds=1,
                backends_max_new_tokens=12,
                backends_swaps=2,
                startup_window_s=30.0,
                startup_steady_answers=2,
                startup_max_new_tokens=16,
                teach_styles=1,
                teach_rounds=1,
                teach_judgements=4,
                teach_heldout=4,
                team_questions=10_000,
                team_next_judgements=2_000,
                team_next_calls=60,
                team_next_reviewers=10,
                team_agreement_items=5_000,
                reward_train_pairs=4,
                reward_heldout_pairs=8,
                reward_score_repeats=2,
            )
        return cfg

    def runs(self, name: str) -> bool:
        """Whether benchmark ``name`` was selected."""
        return name in self.only
