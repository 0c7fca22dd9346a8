"""Benchmark of the feedback loop on the real embedded model (SmolLM2-135M-Instruct).

Run from the repository root::

    .venv/bin/python -m hitl_app.bench [--out bench-results/bench.json] [--quick]
                                       [--only startup,store,phi,team,swap,candidates,concurrency,backends,decode,
                                               safety,reward,retrain,rounds,answers,teach]
                                       [--serve-threads 1,2] [--trainer-threads N] [--keep]

(``make bench`` runs the full set.) Each benchmark measures its figures side by side in one run,
so that ratios stay meaningful on a noisy machine:

0. ``startup`` (startup.py): ``python main.py`` in its own process with an empty compiler cache;
   the first answer's latency through ``/ask``, and the p95 over the first minutes against the
   steady p95 once compiling is done. Goals: <= 10 s; ratio <= 1.5.
   ``store`` (store_read.py): a fresh ledger reading a synthetic store of 100k records, against
   the plain ``json.loads`` + ``validate_python`` read. Goal: <= 2 s.
   ``team`` (team.py): team review without a model: importing a 100k-question set (time and
   peak memory, in a fresh process), Next p50/p99 with 100k items queued and 10k judgements made,
   agreement over 100k judgements (cold and cached) and their dpo and raw exports.
   Goals: <= 30 s; p99 <= 50 ms; <= 2 s; <= 20 s each.
1. ``swap`` (swap.py): after ``Registry.set_active``, how long until ``ModelManager`` serves the
   new version (the ACTIVE watcher, polling every 50 ms, hot-swaps the LoRA tensors), and how
   long the swap held the generation lock; compared with a full reload (``load_base`` +
   ``PeftModel.from_pretrained``) of the same adapter. Goals: median <= 0.1 s, >= 3x faster.
2. ``retrain`` (retrain.py): the wall time of one round on N = 20 judgements (8 edits, 6
   rankings, 4 accepts, 2 rejects; see judgements.py) in the real trainer process
   (``TrainerClient``), from ``request()`` until the trainer is idle with a new version; the
   manifest's rows per kind, its SFT and preference (DPO) stages' figures, and the time of the
   evaluation before publishing and the gate's verdict. Goal: <= 60 s.
3. ``answers`` (answers.py): p50/p95 latency of complete greedy answers while idle and while a
   round runs in the trainer process, for each serving thread count. Goal: p95 ratio <= 1.5.
4. ``candidates`` (candidates.py): K = 4 sampled candidates in one batched ``generate`` call
   against 4 single calls: answer tokens per second of each, their ratio, and the wall ratio;
   also at fixed length; on the fast path, uncompiled and then compiled for 1 and 4 rows (the
   compiled figures are the headline ones, as the app serves). Goal: throughput ratio >= 2.5.
5. ``safety`` (safety.py): the time the safety checks (input guard, answer checks, redaction) add
   to each answer, p50/p95 over the shipped evaluation questions and reference answers, and the
   over-flag rate (medication flags on those correct answers). Goals: p95 <= 5 ms, <= 5%.
   ``reward`` (reward.py): a reward model trained on 20 designed preference pairs (time), its
   held-out pairwise accuracy, scoring 4 candidates, and one RL stage of 8 questions x 4 answers.
   Goals: <= 20 s; >= 0.9; <= 50 ms; <= 120 s.
   ``concurrency`` (concurrency.py): 8 clients asking for 2 candidates at the same moment,
   answered in batched calls, against one client asking the same questions in turn: aggregate
   answer tokens/s and p95 latency. Goals: >= 3x the tokens/s, p95 <= 3x.
   ``backends`` (backends.py): the local backend against vLLM (a server started from
   ``.venv-vllm``), 1 client in turn and 8 at once: aggregate tokens/s, p95 latency, and the swap
   time (publish -> served) of each. No goal: on a CPU vLLM may lose; ``.ci/gpu-bench`` runs it on a GPU.
6. ``decode`` (decode.py): batch-1 greedy answers from the plain fp32 PEFT ``generate``, the bf16
   merged copy decoding uncompiled (``hitl_app.serving.fastpath``) and the fast path as served (that copy
   with compiled decoding, ``hitl_app.serving.compiled_decode``), interleaved, per serving thread count:
   median tokens/s of each, the fast/plain ratio, the share of identical greedy answers, the
   compile and merge times. Goal: the fast path >= 40 tokens/s at its best thread count.

``--quick`` runs every benchmark with small counts (a smoke test of a few minutes: the two
trainer rounds dominate it); ``--only`` runs a subset. Everything runs in a fresh temporary checkpoints/feedback workspace; the only thing
written under the real ``checkpoints/`` is the converted base model (``checkpoints/base``),
which the app itself would create on first start. Results go to a JSON file (``--out``) and a
final table; the exit status is 1 if any selected benchmark failed.

Modules: ``plan`` (what runs), ``items`` and ``judgements`` (the judged questions and the
records written for them), ``workspace`` (settings and the serving model), ``adapters``
(versions to serve), ``rounds`` (trainer-process rounds), ``timing`` and ``figures`` (measuring),
one module per benchmark, ``report`` (goals and table) and ``__main__`` (the command line).
"""
