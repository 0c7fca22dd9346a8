"""The goals each figure is held to, and the final table of figures and verdicts."""

from __future__ import annotations

from typing import Any

from .answers import QUIET_CORES
from .figures import fmt
from .phi_score import GOALS as PHI_GOALS
from .team import GOALS as TEAM_GOALS

GOALS = {
    "swap_max_s": 0.1,  # median publish-to-serving
    "swap_min_speedup": 3.0,  # median reload / median publish-to-serving
    "retrain_max_s": 60.0,  # one round of N=20, request() to idle with a new version
    "rounds_5th_max_s": 90.0,  # the 5th consecutive round of N=20, with replay
    "evaluation_max_share": 0.5,  # evaluation before publishing / the round's training time
    "busy_max_p95_ratio": 1.5,  # p95 busy / p95 idle, per serving thread count
    "candidates_min_speedup": 2.5,  # median tokens/s, K candidates in one call / in K calls
    "safety_max_p95_s": 0.005,  # safety checks per answer
    "safety_max_over_flag_rate": 0.05,  # medication flags on correct reference answers
    "decode_min_tokens_per_s": 40.0,  # fast path, batch-1 greedy, median at the best thread count
    "teach_min_adoption_first": 0.5,  # held-out answers in the taught style after round 1
    "teach_min_adoption_last": 0.8,  # ... and after the last round
    "teach_max_loop_rise": 0.05,  # held-out answers in a loop, above the base's
    "teach_max_perplexity_rise": 0.10,  # probe perplexity above the base's
    "startup_first_answer_max_s": 10.0,  # the first answer after start-up, cold compiler cache
    "startup_max_p95_ratio": 1.5,  # p95 over the first minutes / steady p95
    "store_max_read_s": 2.0,  # a fresh ledger reading 100k records
    "concurrency_min_throughput_ratio": 3.0,  # aggregate tok/s, 8 clients at once / one client in turn
    "concurrency_max_p95_ratio": 3.0,  # p95 latency, 8 clients at once / one client in turn
    "phi_min_recall": PHI_GOALS["recall"],  # identifiers found, on the generated evaluation set
    "phi_min_name_recall": PHI_GOALS["name_recall"],
    "phi_min_clean_unchanged": PHI_GOALS["clean_unchanged"],  # identifier-free sentences left as they were
    "phi_max_p95_ms": PHI_GOALS["p95_ms"],  # one redaction of a 1,000-character text
    "team_import_max_s": TEAM_GOALS["import_s"],  # import of a 100k-question set into the review queue
    "team_next_max_p99_s": TEAM_GOALS["next_p99_s"],  # Next, p99, with 100k items queued and 10k judgements made
    "team_agreement_max_s": TEAM_GOALS["agreement_cold_s"],  # agreement over 100k judgements, first (uncached) call
    "team_export_max_s": TEAM_GOALS["export_s"],  # export of 100k judgements, each of dpo and raw
}
Row = tuple[str, str, str]  # (figure, value, goal or note)


def evaluate_goals(results: dict[str, Any]) -> dict[str, Any]:
    """Which goals each measured figure meets (None where the figure is missing)."""
    goals: dict[str, Any] = {"targets": GOALS}
    swap = results.get("swap") or {}
    if "median_swap_s" in swap:
        goals["swap_within_0.1s"] = swap["median_swap_s"] <= GOALS["swap_max_s"]
        speedup = swap["speedup_reload_over_swap"]
        goals["swap_3x_faster_than_reload"] = speedup is not None and speedup >= GOALS["swap_min_speedup"]
    retrain = results.get("retrain") or {}
    if "wall_s" in retrain:
        goals["retrain_within_60s"] = retrain["wall_s"] <= GOALS["retrain_max_s"]
        floor = retrain.get("compute_floor")
        # Whether the goal can be met on this CPU at all with the recipe: its arithmetic's floor.
        goals["retrain_floor_within_60s"] = None if floor is None else floor["floor_s"] <= GOALS["retrain_max_s"]
        share = retrain.get("evaluation_share_of_training")
        goals["evaluation_within_50pct_of_training"] = None if share is None else share <= GOALS["evaluation_max_share"]
    rounds = results.get("rounds") or {}
    if rounds.get("last_wall_s") is not None and len(rounds.get("series") or []) >= 5:
        goals["rounds_5th_within_90s"] = rounds["last_wall_s"] <= GOALS["rounds_5th_max_s"]
        floor = rounds.get("last_floor_s")
        goals["rounds_5th_floor_within_90s"] = None if floor is None else floor <= GOALS["rounds_5th_max_s"]
    answers = results.get("answers") or {}
    for key, row in (answers.get("per_threads") or {}).items():
        r = row["p95_ratio_busy_over_idle"]
        goals[f"answers_p95_ratio_within_1.5_serve_threads_{key}"] = None if r is None else r <= GOALS["busy_max_p95_ratio"]
    candidates = results.get("candidates") or {}
    if "throughput_ratio" in candidates:
        r = candidates["throughput_ratio"]
        goals["candidates_throughput_2.5x_sequential"] = None if r is None else r >= GOALS["candidates_min_speedup"]
    startup = results.get("startup") or {}
    if startup.get("first_answer_s") is not None:
        goals["startup_first_answer_within_10s"] = startup["first_answer_s"] <= GOALS["startup_first_answer_max_s"]
        r = startup.get("p95_ratio")
        goals["startup_p95_within_1.5x_steady"] = None if r is None else r <= GOALS["startup_max_p95_ratio"]
    store = results.get("store") or {}
    if "read_s" in store:
        goals["store_100k_within_2s"] = store.get("read_per_100k_s", store["read_s"]) <= GOALS["store_max_read_s"]
    concurrency = results.get("concurrency") or {}
    if "throughput_ratio" in concurrency:
        t, p = concurrency["throughput_ratio"], concurrency["p95_ratio"]
        goals["concurrency_throughput_3x_one_client"] = None if t is None else t >= GOALS["concurrency_min_throughput_ratio"]
        goals["concurrency_p95_within_3x_one_client"] = None if p is None else p <= GOALS["concurrency_max_p95_ratio"]
    team = results.get("team") or {}
    if "import" in team:
        goals["team_import_within_30s"] = team["import"]["wall_s"] <= GOALS["team_import_max_s"]
    if "next" in team:
        goals["team_next_p99_within_50ms"] = team["next"]["p99_s"] <= GOALS["team_next_max_p99_s"]
    if "agreement" in team:
        goals["team_agreement_within_2s"] = team["agreement"]["cold_s"] <= GOALS["team_agreement_max_s"]
    if "export" in team:
        goals["team_export_within_20s"] = all(
            team["export"][kind]["wall_s"] <= GOALS["team_export_max_s"] for kind in ("dpo", "raw")
        )
    phi = results.get("phi") or {}
    if "recall" in phi:
        goals.update({f"phi_{name}": met for name, met in phi["goals"].items()})
    reward = results.get("reward") or {}
    if "train_s" in reward:
        goals.update({f"reward_{name}": met for name, met in reward["goals"].items()})
    decode = results.get("decode") or {}
    if "best_fast_tokens_per_s" in decode:
        goals["decode_fast_path_40_tokens_per_s"] = decode["best_fast_tokens_per_s"] >= GOALS["decode_min_tokens_per_s"]
    teach = results.get("teach") or {}
    if "styles" in teach:
        goals.update(_teach_goals(teach))
    safety = results.get("safety") or {}
    if "per_answer" in safety:
        goals["safety_p95_within_5ms"] = safety["per_answer"]["p95_s"] <= GOALS["safety_max_p95_s"]
        goals["safety_over_flag_within_5pct"] = safety["over_flag_rate"] <= GOALS["safety_max_over_flag_rate"]
    return goals


def _teach_goals(teach: dict[str, Any]) -> dict[str, Any]:
    """Each teaching goal, over every style (a goal holds when it holds for all of them).

    A style or poisoned round that failed, or ran fewer rounds than asked, fails every goal it bears on.
    """
    styles = teach["styles"]
    complete = all("error" not in s and len(s["rounds"]) == teach["rounds_per_style"] for s in styles)
    rounds = [r for s in styles for r in s["rounds"]]
    return {
        "teach_every_round_ran": complete,
        "teach_adoption_after_round_1": complete and all(s["rounds"][0]["adoption"] >= GOALS["teach_min_adoption_first"] for s in styles),
        "teach_adoption_after_last_round": complete and all(s["rounds"][-1]["adoption"] >= GOALS["teach_min_adoption_last"] for s in styles),
        "teach_no_more_loops_than_base": complete and all(
            r["loop_rate"] <= s["base"]["loop_rate"] + GOALS["teach_max_loop_rise"] + 1e-9 for s in styles for r in s["rounds"]
        ),
        "teach_perplexity_within_10pct_of_base": complete and all(
            r["perplexity_vs_base"] is not None and r["perplexity_vs_base"] <= GOALS["teach_max_perplexity_rise"] for r in rounds
        ),
        "teach_every_round_passes_the_gate": complete and not any(r["held_back"] for r in rounds),
        "teach_poisoned_rounds_held_back": all("error" not in p and p["held_back"] for p in teach["poisoned"]),
    }


def _teach_rows(teach: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for style in teach["styles"]:
        base = style.get("base")
        rows.append((f"7. teach {style['style']} ({style['kind']}): base",
                     f"adoption {fmt(base['adoption'], '', 1, 2)}" if base else "-",
                     f"loops {fmt(base['loop_rate'], '', 1, 2)}, probe perplexity {fmt(base.get('perplexity'), '', 1, 2)}" if base else ""))
        for r in style["rounds"]:
            verdict = "held back: " + r["gate"] if r["held_back"] else "served"
            rows.append((f"   round {r['round']} -> {r['version']}", f"adoption {fmt(r['adoption'], '', 1, 2)}",
                         f"loops {fmt(r['loop_rate'], '', 1, 2)}, perplexity {fmt(r['perplexity_vs_base'], ' %', 100, 1)} vs base, "
                         f"KL {fmt(r['kl_base'], '', 1, 3)}, {fmt(r['round_s'], ' s', 1, 0)}; {verdict}"))
        if "error" in style:
            rows.append(("   FAILED", style["error"][:60], ""))
    for p in teach["poisoned"]:
        if "error" in p:
            rows.append((f"   poisoned round: {p['poison']}", "FAILED", p["error"][:60]))
            continue
        rows.append((f"   poisoned round: {p['poison']}", "held back" if p["held_back"] else "SERVED",
                     f"{p['gate']}; {p['edits_flagged_unclear']} / {p['edits']} edits flagged unclear"))
    for goal in ("every_round_ran", "adoption_after_round_1", "adoption_after_last_round", "no_more_loops_than_base",
                 "perplexity_within_10pct_of_base", "every_round_passes_the_gate", "poisoned_rounds_held_back"):
        rows.append((f"   goal: {goal.replace('_', ' ')}", fmt(goals.get(f"teach_{goal}")), ""))
    return rows


def _safety_rows(safety: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    per = safety["per_answer"]
    return [
        ("5. safety checks per answer: p50 / p95", f"{fmt(per['p50_s'], '', 1e3, 2)} / {fmt(per['p95_s'], ' ms', 1e3, 2)}",
         f"<= 5 ms: {fmt(goals.get('safety_p95_within_5ms'))}; n = {per['n']}, answers of {safety['mean_answer_chars']:.0f} characters"),
        ("   over-flag rate on correct answers", f"{len(safety['over_flagged'])} / {safety['answers']}",
         f"<= 5 %: {fmt(goals.get('safety_over_flag_within_5pct'))}"),
        ("   input guard: adversarial blocked / benign refused",
         "{} / {}, {} / {}".format(*safety["guard_blocked"], *safety["guard_refused_benign"]),
         "the shipped red-team suites"),
    ]


def _swap_rows(swap: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    pts = swap["publish_to_serving"]
    return [
        ("1. swap: publish -> serving, median", fmt(swap["median_swap_s"], " ms", 1e3, 1),
         f"<= 100 ms: {fmt(goals.get('swap_within_0.1s'))}"),
        ("   publish -> serving, min / max", f"{fmt(pts['min_s'], ' ms', 1e3, 1)} / {fmt(pts['max_s'], ' ms', 1e3, 1)}", f"n = {pts['n']}"),
        ("   swap lock held, median", fmt(swap["median_lock_held_s"], " ms", 1e3, 2), ""),
        ("   activate (read + swap), median", fmt(swap["activate_total"]["p50_s"], " ms", 1e3, 1), ""),
        ("   full reload, median", fmt(swap["median_reload_s"], " s", 1, 2), f"n = {swap['reload']['n']}"),
        ("   reload / swap", fmt(swap["speedup_reload_over_swap"], " x", 1, 1),
         f">= 3x: {fmt(goals.get('swap_3x_faster_than_reload'))}"),
        ("   other processes' CPU during swaps", fmt(swap.get("foreign_cpu_cores"), " cores", 1, 2), ""),
        ("   max |logit diff| swapped vs reloaded", f"{swap['check']['max_abs_logit_diff_swapped_vs_reloaded']:.2e}",
         f"adapter effect {swap['check']['max_abs_logit_diff_adapter_vs_base']:.2e}"),
    ]


def _rows_text(rows: dict[str, int]) -> str:
    """A manifest's row counts, briefly: sft, dpo, kto desirable/undesirable."""
    return (f"sft {rows.get('sft', 0)}, dpo {rows.get('dpo', 0)}, "
            f"kto +{rows.get('kto_desirable', 0)}/-{rows.get('kto_undesirable', 0)}")


def _preference_text(pref: dict[str, Any] | None) -> str:
    if not pref:
        return "no preference stage"
    return f"{pref['method'].upper()} {pref['rows']} rows, {pref['steps']} steps, {fmt(pref['duration_s'], ' s', 1, 1)}"


def _gate_text(figures: dict[str, Any]) -> str:
    if figures.get("gate_passed") is None:
        return "no promotion gate"
    failures = ", ".join(figures.get("gate_failures") or [])
    return f"gate passed: {fmt(figures['gate_passed'])}" + (f" ({failures})" if failures else "")


def _retrain_rows(retrain: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    mix = ", ".join(f"{n} {kind}" for kind, n in retrain["mix"].items() if n)
    pref = retrain.get("preference")
    rows: list[Row] = [
        (f"2. retrain round, N = {retrain['judgements']}: wall", fmt(retrain["wall_s"], " s", 1, 1),
         f"<= 60 s: {fmt(goals.get('retrain_within_60s'))}"),
        *_floor_rows(retrain.get("compute_floor"), "60 s", goals.get("retrain_floor_within_60s")),
        ("   judgements", mix, f"holdout {retrain['holdout_fraction']}, method {retrain['train_method']}"),
        ("   rows (manifest)", _rows_text(retrain["rows"]),
         f"as expected: {fmt(retrain['rows_match_expected'])}, dropped pairs {retrain['rows'].get('dropped_identical_pairs', 0)}"),
        ("   manifest duration_s", fmt(retrain["manifest_duration_s"], " s", 1, 1), _preference_text(pref)),
        ("   SFT: loss before -> after", f"{fmt(retrain['loss_before'])} -> {fmt(retrain['loss_after'])}",
         f"{retrain['sft_rows']} rows, {retrain['sft_steps']} steps, SFT alone {fmt(retrain['sft_duration_s'], ' s', 1, 1)}"),
        ("   load + SFT + save", fmt(retrain["load_sft_save_s"], " s", 1, 1),
         f"trainer_threads = {retrain['trainer_threads']}"),
        ("   evaluation before publishing", fmt(retrain["evaluation_duration_s"], " s", 1, 1), _gate_text(retrain)),
        ("   serving version's figures", ", ".join(sorted(set(((retrain.get("evaluation") or {}).get("reused") or {}).values())))
         or "measured", "reused from its manifest or the base cache where the evaluation data are the same"),
        ("   of which red-team scoring", fmt((retrain.get("evaluation") or {}).get("redteam_s"), " s", 1, 1),
         f"{(retrain.get('evaluation') or {}).get('redteam_prompts', 0)} adversarial + as many benign prompts"),
        ("   evaluation / training time", fmt(retrain.get("evaluation_share_of_training"), " %", 100, 0),
         f"<= 50 %: {fmt(goals.get('evaluation_within_50pct_of_training'))}; training {fmt(retrain['train_duration_s'], ' s', 1, 1)}"),
    ]
    if pref:
        rows += [
            (f"   {pref['method'].upper()}: loss / reward accuracy", f"{fmt(pref['loss'])} / {fmt(pref['reward_accuracy'], '', 1, 2)}",
             f"figures from {pref.get('figures_from') or 'an evaluation pass'}"),
            (f"   {pref['method'].upper()}: reward margin / kl", f"{fmt(pref['reward_margin'])} / {fmt(pref['kl'])}", ""),
        ]
    rows.append(("   other processes' CPU during the round", fmt(retrain.get("foreign_cpu_cores"), " cores", 1, 2), ""))
    return rows


def _rounds_rows(rounds: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for r in rounds["series"]:
        rows.append((f"2b. round {r['round']} of {rounds['rounds']} ({r['judgements_in_store']} judgements stored): wall",
                     fmt(r["wall_s"], " s", 1, 1),
                     f"SFT {r['sft_steps']} steps {fmt(r['sft_duration_s'], ' s', 1, 1)}, preference "
                     f"{fmt(r['preference_duration_s'], ' s', 1, 1)}, evaluation {fmt(r['evaluation_duration_s'], ' s', 1, 1)}, "
                     f"{r['replayed_judgements']} replayed; serving figures {', '.join(r['serving_figures_from'])}"))
    rows.append(("    5th round", fmt(rounds["last_wall_s"], " s", 1, 1),
                 f"<= 90 s: {fmt(goals.get('rounds_5th_within_90s'))}; --round-budget-s {rounds['round_budget_s']}"))
    if rounds["series"]:
        rows += _floor_rows(rounds["series"][-1].get("compute_floor"), "90 s", goals.get("rounds_5th_floor_within_90s"))
    return rows


def _floor_rows(floor: dict[str, Any] | None, goal: str, reachable: bool | None) -> list[Row]:
    """The least time the round's training takes on this CPU, and whether the goal is within reach."""
    if floor is None:
        return []
    stages = ", ".join(f"{stage} {value:.0f}" for stage, value in floor["gflop"].items() if stage != "total" and value)
    return [
        ("   training's arithmetic", f"{floor['gflop']['total']:.0f} GFLOP", stages),
        ("   its floor: best fp32 matmul rate", fmt(floor["floor_s"], " s", 1, 1),
         f"{floor['gemm_gflops']:.1f} GFLOP/s on {floor['threads']} threads; {goal} reachable with this recipe: {fmt(reachable)}"),
        ("   at the model's own forward rate", fmt(floor["forward_floor_s"], " s", 1, 1),
         f"{floor['forward_gflops']:.1f} GFLOP/s (a forward pass over one SFT row, no gradient)"),
    ]


def _answers_rows(answers: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, row in (answers.get("per_threads") or {}).items():
        idle, busy = row["idle"], row["busy"]
        rows += [
            (f"3. answers, {key} serve thread(s): idle p50 / p95",
             f"{fmt(idle['p50_s'], ' s', 1, 2)} / {fmt(idle['p95_s'], ' s', 1, 2)}",
             f"n = {idle['n']}, {answers['max_new_tokens']} new tokens max"),
            ("   during retrain p50 / p95",
             f"{fmt(busy['p50_s'], ' s', 1, 2)} / {fmt(busy['p95_s'], ' s', 1, 2)}", f"n = {busy['n']}"),
            ("   p95 busy / p95 idle", fmt(row["p95_ratio_busy_over_idle"], " x", 1, 2),
             f"<= 1.5: {fmt(goals.get(f'answers_p95_ratio_within_1.5_serve_threads_{key}'))}"),
            ("   other processes' CPU, idle / busy",
             f"{fmt(row['idle_foreign_cpu_cores'], '', 1, 2)} / {fmt(row['busy_foreign_cpu_cores'], ' cores', 1, 2)}", ""),
            (f"   quiet answers only (other < {QUIET_CORES} cores): p95 idle / busy",
             f"{fmt(row['idle_quiet']['p95_s'], ' s', 1, 2)} / {fmt(row['busy_quiet']['p95_s'], ' s', 1, 2)}",
             f"n = {row['idle_quiet']['n']} / {row['busy_quiet']['n']}, ratio {fmt(row['p95_ratio_busy_over_idle_quiet'], ' x', 1, 2)}"),
        ]
    for i, rnd in enumerate(answers.get("busy_rounds") or []):
        rows.append((f"   busy round {i + 1} ({rnd['version']}) manifest duration",
                     fmt(rnd["manifest_duration_s"], " s", 1, 1),
                     f"{_rows_text(rnd['rows'])}; {_preference_text(rnd.get('preference'))}; "
                     f"evaluation {fmt(rnd.get('evaluation_duration_s'), ' s', 1, 1)}; "
                     f"other processes {fmt(rnd.get('foreign_cpu_cores'), ' cores', 1, 2)}"))
    return rows


def _candidates_rows(cand: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    def per_mode(figures: dict[str, Any], key: str, unit: str = "", scale: float = 1.0, digits: int = 1) -> str:
        b, s = figures["batched"][key]["median"], figures["sequential"][key]["median"]
        return f"{fmt(b, '', scale, digits)} / {fmt(s, unit, scale, digits)}"

    natural, fixed = cand["natural"], cand["fixed_length"]
    k = cand["k"]
    rows: list[Row] = [
        (f"4. candidates, K = {k}, {cand['decoding']}: tokens/s one call / {k} calls", per_mode(natural, "tokens_per_s"),
         f"n = {cand['pairs']} pairs, {cand['torch_threads']} threads, {cand['max_new_tokens']} new tokens max"),
        ("   throughput ratio batched / sequential", fmt(cand["throughput_ratio"], " x", 1, 2),
         f">= 2.5x: {fmt(goals.get('candidates_throughput_2.5x_sequential'))}"),
        ("   wall sequential / batched, median of pairs", fmt(cand["median_wall_ratio"], " x", 1, 2),
         f"tokens batched / sequential {per_mode(natural, 'new_tokens', digits=0)}"),
        ("   padding share batched / sequential", per_mode(natural, "padding_share", " %", 100, 0),
         "a batch steps until its longest candidate ends"),
        (f"   fixed length ({cand['max_new_tokens']} tokens): tokens/s", per_mode(fixed, "tokens_per_s"),
         f"ratio {fmt(fixed['throughput_ratio_batched_over_sequential'], ' x', 1, 2)}, "
         f"forced: {fmt(fixed.get('forced_every_candidate'))}"),
        ("   other processes' CPU during the runs", fmt(cand.get("foreign_cpu_cores"), " cores", 1, 2), ""),
    ]
    uncompiled = cand.get("uncompiled")
    if uncompiled:
        compile_s = ", ".join(f"{shape} {fmt(s, ' s', 1, 1)}" for shape, s in cand["compiling"]["compile_s"].items())
        rows.append(("   uncompiled (until compiling is done): tokens/s", per_mode(uncompiled["natural"], "tokens_per_s"),
                     f"ratio {fmt(uncompiled['throughput_ratio'], ' x', 1, 2)}; compiling {compile_s}"))
    return rows


def _decode_rows(decode: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for threads, row in decode["per_threads"].items():
        rows.append((f"6. decode, batch 1, {threads} threads: tokens/s plain fp32 / merged bf16 / fast",
                     f"{fmt(row['plain_tokens_per_s'], '', 1, 1)} / {fmt(row.get('merged_tokens_per_s'), '', 1, 1)} / "
                     f"{fmt(row['fast_tokens_per_s'], '', 1, 1)}",
                     f"fast/plain {fmt(row['ratio_fast_over_plain'], ' x', 1, 2)}; n = {len(row['fast_samples'])} answers each"))
    merges = decode.get("merge_s") or []
    return rows + [
        ("   fast path, best thread count", fmt(decode["best_fast_tokens_per_s"], " tok/s", 1, 1),
         f">= 40 tok/s: {fmt(goals.get('decode_fast_path_40_tokens_per_s'))}; {decode['fast_dtype']}, "
         f"{decode['max_new_tokens']} new tokens max"),
        ("   greedy answers identical / shared prefix", f"{fmt(decode['identical_share'], '', 100, 0)} / "
         f"{fmt(decode['mean_shared_prefix_fraction'], ' %', 100, 0)}", f"{decode['prompts']} evaluation questions"),
        ("   compiling the fast path's cache (background, once)", fmt(decode.get("compile_s"), " s", 1, 1),
         f"{decode.get('compiled_bucket')}-token cache; Inductor's disk cache makes later starts faster"),
        ("   merge into the copy (version change)", fmt(max(merges) if merges else None, " ms", 1e3, 0),
         "once per swap, and per compare answer of another version"),
        ("   other processes' CPU during the runs", fmt(decode.get("foreign_cpu_cores"), " cores", 1, 2), ""),
    ]


def _startup_rows(startup: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    compiled = startup.get("compiled") or {}
    return [
        ("0. start-up, cold compiler cache: first answer", fmt(startup["first_answer_s"], " s", 1, 2),
         f"<= 10 s: {fmt(goals.get('startup_first_answer_within_10s'))}; HTTP up after "
         f"{fmt(startup['ready_s'], ' s', 1, 1)}; {startup['first_answer_tokens']} answer tokens"),
        (f"   p95 over the first {startup['window_s']:.0f} s / steady p95",
         f"{fmt(startup['window_p95_s'], ' s', 1, 2)} / {fmt(startup['steady_p95_s'], ' s', 1, 2)}",
         f"ratio {fmt(startup['p95_ratio'], ' x', 1, 2)}, <= 1.5: {fmt(goals.get('startup_p95_within_1.5x_steady'))}; "
         f"{startup['window_answers']} answers; compiled {compiled.get('compile_s')}"),
    ]


def _store_rows(store: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    return [
        (f"0. feedback store: a fresh ledger reads {store['records']} records ({store['megabytes']} MB)",
         fmt(store["read_s"], " s", 1, 2),
         f"<= 2 s per 100k: {fmt(goals.get('store_100k_within_2s'))}; json.loads + validate_python: "
         f"{fmt(store['reference_s'], ' s', 1, 2)} ({fmt(store['ratio'], ' x', 1, 2)})"),
    ]


def _phi_rows(phi: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    by_type = ", ".join(f"{kind} {recall:.2f}" for kind, recall in phi["recall_by_type"].items())
    rows: list[Row] = [
        (f"0c. redaction on the generated set: recall, {sum(phi['identifiers'].values())} identifiers",
         fmt(phi["recall"], "", 1, 3), f">= 0.98: {fmt(goals.get('phi_recall'))}; {by_type}"),
        ("    names found", fmt(phi["recall_by_type"].get("NAME"), "", 1, 3), f">= 0.97: {fmt(goals.get('phi_name_recall'))}"),
        (f"    clean sentences unchanged ({phi['clean_sentences']})", fmt(phi["clean_unchanged"], "", 1, 3),
         f">= 0.98: {fmt(goals.get('phi_clean_unchanged'))}"),
        ("    one redaction of 1,000 characters: p50 / p95", f"{fmt(phi['p50_ms'], '', 1, 2)} / {fmt(phi['p95_ms'], ' ms', 1, 2)}",
         f"p95 <= 5 ms: {fmt(goals.get('phi_p95_ms'))}"),
    ]
    own, others = phi["own_text"], phi["other_locales"]
    return rows + [
        (f"    the app's own clinical text unchanged ({own['sentences']} sentences)", fmt(own["unchanged"], "", 1, 3),
         "no goal: text outside the set's templates"),
        (f"    names from {others['locales']} other locales and scripts ({others['names']})",
         fmt(others["recall"], "", 1, 3), "no goal: names outside the set's locales"),
    ]


def _team_rows(team: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    imp = team["import"]
    rows: list[Row] = [
        (f"0b. team: import of {imp['written']['rows']} questions", fmt(imp["wall_s"], " s", 1, 2),
         f"<= 30 s: {fmt(goals.get('team_import_within_30s'))}; {imp['imported']} imported, {imp['duplicates']} "
         f"duplicates, {imp['refused']} refused"),
        ("    import peak memory (max RSS of a fresh process - RSS before)", fmt(imp["peak_rss_delta_mb"], " MB", 1, 0),
         f"peak RSS {fmt(imp['peak_rss_mb'], ' MB', 1, 0)}"),
    ]
    nxt = team.get("next")
    if nxt:
        rows.append((f"    Next, {nxt['queue_size']} queued, {nxt['judgements']} judgements: p50 / p99",
                     f"{fmt(nxt['p50_s'], '', 1e3, 1)} / {fmt(nxt['p99_s'], ' ms', 1e3, 1)}",
                     f"p99 <= 50 ms: {fmt(goals.get('team_next_p99_within_50ms'))}; {nxt['calls']} calls by "
                     f"{nxt['reviewers']} reviewers, max {fmt(nxt['max_s'], ' ms', 1e3, 1)}"))
    agr = team.get("agreement")
    if agr:
        rows.append((f"    agreement over {agr['judgements']} judgements: cold / cached",
                     f"{fmt(agr['cold_s'], '', 1, 2)} / {fmt(agr['cached_s'], ' s', 1, 4)}",
                     f"cold <= 2 s: {fmt(goals.get('team_agreement_within_2s'))}; alpha nominal "
                     f"{fmt(agr['alpha_nominal'], '', 1, 2)}, ordinal {fmt(agr['alpha_ordinal'], '', 1, 2)}; "
                     f"store read first {fmt(agr['ledger_and_queue_read_s'], ' s', 1, 2)}"))
    exp = team.get("export")
    if exp:
        rows.append((f"    export of {exp['judgements']} judgements: dpo / raw",
                     f"{fmt(exp['dpo']['wall_s'], '', 1, 2)} / {fmt(exp['raw']['wall_s'], ' s', 1, 2)}",
                     f"each <= 20 s: {fmt(goals.get('team_export_within_20s'))}; rows {exp['dpo']['rows']} / "
                     f"{exp['raw']['rows']} (held-out judgements left out)"))
    build = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f} s" for k, v in team.get("build_s", {}).items())
    rows.append(("    building the stores (not in any figure)", "", build))
    return rows


def _concurrency_rows(c: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    one, many = c["one_client"], c["all_at_once"]
    return [
        (f"4b. {c['clients']} clients x {c['candidates']} candidates at once / one client in turn: tokens/s",
         f"{fmt(many['tokens_per_s'], '', 1, 1)} / {fmt(one['tokens_per_s'], '', 1, 1)}",
         f"ratio {fmt(c['throughput_ratio'], ' x', 1, 2)}, >= 3: {fmt(goals.get('concurrency_throughput_3x_one_client'))}"),
        ("    p95 latency, at once / in turn", f"{fmt(many['p95_latency_s'], ' s', 1, 2)} / {fmt(one['p95_latency_s'], ' s', 1, 2)}",
         f"ratio {fmt(c['p95_ratio'], ' x', 1, 2)}, <= 3: {fmt(goals.get('concurrency_p95_within_3x_one_client'))}; "
         f"questions per batched call {c['questions_per_batched_call']}"),
    ]


def _backends_rows(b: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for backend, label in (("local", "local"), ("vllm", "vLLM")):
        r = b[backend]
        rows.append((
            f"4c. {label}: 1 client / {b['clients']} at once x {b['candidates']} candidates: tokens/s",
            f"{fmt(r['one_client']['tokens_per_s'], '', 1, 1)} / {fmt(r['all_at_once']['tokens_per_s'], '', 1, 1)}",
            f"p95 {fmt(r['one_client']['p95_latency_s'], ' s', 1, 2)} / {fmt(r['all_at_once']['p95_latency_s'], ' s', 1, 2)}; "
            f"swap (publish -> served) median {fmt(r['swap']['median_s'], ' ms', 1e3, 0)}",
        ))  # fmt: skip
    rows.append((
        "    vLLM / local tokens/s, 1 client / at once",
        f"{fmt(b['one_client_vllm_over_local_tokens_per_s'], ' x', 1, 2)} / {fmt(b['all_at_once_vllm_over_local_tokens_per_s'], ' x', 1, 2)}",
        "no goal: on a CPU vLLM may lose; the figure that matters comes from a GPU (docs/deployment.md)",
    ))  # fmt: skip
    return rows


# The table's sections, in its order, with the row builder of each benchmark's results.
def _reward_rows(reward: dict[str, Any], goals: dict[str, Any]) -> list[Row]:
    return [
        (f"6. reward model: training on {reward['pairs']} designed pairs ({reward['steps']} steps)", fmt(reward["train_s"], " s", 1, 1),
         f"<= 20 s: {fmt(goals.get('reward_train_within_20s'))}; {reward['epochs']} epochs, batch {reward['batch_size']}, "
         f"loss {reward['loss_first']:.3f} -> {reward['loss_last']:.3f}"),
        (f"   held-out accuracy, {reward['heldout_pairs']} pairs of new wording (before training)",
         f"{reward['heldout_accuracy']:.3f} ({reward['heldout_accuracy_before']:.3f})",
         f">= 0.9: {fmt(goals.get('reward_heldout_accuracy_at_least_0_9'))}; margin {reward['heldout_margin']:.3f}"),
        (f"   scoring {reward['score_candidates']} candidates of {reward['score_mean_tokens']:.0f} tokens after "
         f"{reward['score_prompt_tokens']} prompt tokens ({reward['score_dtype'].removeprefix('torch.')}), median",
         fmt(reward["score_s"], " ms", 1e3, 1), f"<= 50 ms: {fmt(goals.get('reward_score_within_50ms'))}; max {fmt(reward['score_p_max_s'], ' ms', 1e3, 1)}"),
        (f"   RL stage (GRPO): {reward['rl']['prompts']} prompts x {reward['rl']['generations']} answers of <= "
         f"{reward['rl']['max_new_tokens']} tokens, {reward['rl']['steps']} steps", fmt(reward["rl"]["duration_s"], " s", 1, 1),
         f"<= 120 s: {fmt(goals.get('reward_rl_within_120s'))}; reward {reward['rl']['reward_first']:.3f} -> "
         f"{reward['rl']['reward_last']:.3f}, KL {fmt(reward['rl']['kl_last'], '', 1, 4)}, reward-length r "
         f"{fmt(reward['rl']['reward_length_correlation'], '', 1, 2)}"),
    ]  # fmt: skip


_SECTIONS = (
    ("startup", "first_answer_s", _startup_rows),
    ("store", "read_s", _store_rows),
    ("phi", "recall", _phi_rows),
    ("team", "import", _team_rows),
    ("concurrency", "throughput_ratio", _concurrency_rows),
    ("backends", "vllm", _backends_rows),
    ("swap", "median_swap_s", _swap_rows),
    ("retrain", "wall_s", _retrain_rows),
    ("rounds", "series", _rounds_rows),
    ("answers", "per_threads", _answers_rows),
    ("candidates", "throughput_ratio", _candidates_rows),
    ("decode", "per_threads", _decode_rows),
    ("safety", "per_answer", _safety_rows),
    ("reward", "train_s", _reward_rows),
    ("teach", "styles", _teach_rows),
)


def report_rows(results: dict[str, Any]) -> list[Row]:
    """(figure, value, goal) rows of the final table, for the benchmarks that ran."""
    rows: list[Row] = []
    goals = results.get("goals", {})
    for key, marker, build in _SECTIONS:
        section = results.get(key) or {}
        if marker in section:
            rows += build(section, goals)
        if "error" in section:
            rows.append((key, "FAILED", section["error"][:60]))
    meta = results.get("meta", {})
    rows.append(("total runtime", fmt(meta.get("total_runtime_s"), " s", 1, 1),
                 f"load avg {meta.get('loadavg_start')} -> {meta.get('loadavg_end')}"))
    return rows


def print_table(rows: list[Row]) -> None:
    """Print the final table (the one place the benchmark prints)."""
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    line = "-" * (sum(widths) + 6)
    print(line)
    for figure, value, goal in rows:
        print(f"{figure:<{widths[0]}} | {value:>{widths[1]}} | {goal}")
    print(line)
