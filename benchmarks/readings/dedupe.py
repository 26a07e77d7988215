"""bench_dedupe's reading: diffkit dedupe against imagededup's ``PHash().find_duplicates``."""

from __future__ import annotations

from typing import Any

from benchmarks.readings.figures import table, x

REPORT = "dedupe"
COMMAND = "python -m benchmarks.bench_dedupe"
PEER = "imagededup `PHash().find_duplicates`"

_STEPS = {
    "imagededup_s": "imagededup `PHash().find_duplicates`, at diffkit's threshold",
    "imagededup_at_best_threshold_s": "imagededup at its own best threshold (one encoding + that search)",
    "diffkit_s": "diffkit dedupe (decode draft-L-64: libjpeg's 1/8 scale, empty cache)",
    "diffkit_full_decode_s": "diffkit dedupe, full decode",
    "diffkit_cached_s": "diffkit dedupe rerun (cache warm)",
    "search_100000_random_s": "diffkit search alone, 100,000 random hashes",
    "decode_floor_s": "decode floor: read + entropy-decode every file at 1/8 scale, nothing else",
}
GOAL = 1.25  # issue 28.3: diffkit within this factor of the decode floor


def headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"{s['images']:,} JPEGs ({s['megabytes']:.0f} MB), threshold {s['threshold']}, median of "
        f"{s['repeats']} alternating rounds: {s['diffkit_s']:.1f} s vs {s['imagededup_s']:.1f} s "
        f"({x(s['speedup_vs_imagededup'])}); {x(s['diffkit_cpu_over_floor_cpu'], 2)} the decode floor in "
        f"CPU seconds ({x(s['diffkit_over_decode_floor'], 2)} in wall time on a shared machine); "
        f"pair precision {s['diffkit_precision']:.3f} vs {s['imagededup_precision']:.3f} at this "
        f"threshold, {s['imagededup_best_precision']:.3f} at imagededup's best; cached rerun "
        f"{s['diffkit_cached_rerun_s']:.2f} s; 1,000,000 hashes searched at 8 bits in "
        f"{s['search_1000000_random_t8_s']:.1f} s"
    )


def _floor(s: dict[str, Any], split: dict[str, Any]) -> str:
    """The floor ratio, judged on the larger of wall and CPU time, and where the time over the floor goes."""
    wall, cpu, stage = s["diffkit_over_decode_floor"], s["diffkit_cpu_over_floor_cpu"], s["diffkit_stage_s"]
    retired = s["retired_draft_L_256_cpu_over_floor_one_core"]
    # A wall ratio below 1 cannot be measured truth (see below): then CPU seconds alone judge the goal.
    judged = float(cpu) if float(wall) < 1 else max(float(wall), float(cpu))
    basis = "in CPU seconds" if float(wall) < 1 else "on the larger of the two"
    verdict = (
        f"within the {GOAL}x goal {basis}"
        if judged <= GOAL
        else f"over the {GOAL}x goal {basis}; the per-file costs below are where the rest goes"
    )
    below_one = (
        " A wall ratio below 1 is the shared machine's doing, not a result: diffkit does all that the"
        " floor does and then hashes; under load the floor's process pool also waits on its parent's"
        " task and result threads."
        if float(wall) < 1
        else ""
    )
    return (
        f"Entropy decoding alone (libjpeg's cheapest 1/8 scale, greyscale, same workers) takes "
        f"{s['decode_floor_s']:.2f} s, {s['decode_floor_cpu_s_median']:.2f} CPU seconds: diffkit takes "
        f"{x(wall, 2)} that floor in wall time and {x(cpu, 2)} in CPU seconds "
        f"({s['diffkit_cpu_s_median']:.2f} s; {verdict}). The machine was shared (load average "
        f"{s['load_before'][0]:.1f} before, "
        f"{s['load_after'][0]:.1f} after, on {s['workers']} cores): CPU seconds are what other processes "
        f"do not inflate.{below_one} "
        f"imagededup / floor = {x(s['max_speedup_vs_imagededup_at_decode_floor'], 2)} is the most any tool "
        "that decodes these JPEGs through libjpeg could gain over imagededup before it hashes anything; with "
        f"a pHash added, {x(s['max_speedup_vs_imagededup_with_cheapest_phash'], 2)}. Per file in one "
        f"thread's CPU time, diffkit's worker costs {x(s['diffkit_cpu_over_floor_one_core'], 2)} the "
        f"floor's read and entropy decoding ({s['diffkit_cpu_ms_per_file']:.2f} ms; the retired draft-L-256 "
        f"path {s['retired_draft_L_256_cpu_ms_per_file']:.2f} ms, {x(retired, 2)}): "
        f"read {split['read']:.2f} ms, sha256 {split['sha256']:.2f} ms (only for the "
        f"{s['sha256_share_of_files']:.3f} of files that share a size), decode {split['decode']:.2f} ms "
        f"(of which colour {s['colour_cost_ms_per_file']:.2f} ms over a greyscale decode at the same "
        f"scale), pHash {split['phash']:.2f} ms, thumbnail {split['thumbnail']:.2f} ms; the floor "
        f"{split['floor_decode_1_8_L']:.2f} ms. Per run: hashing {stage['hash']:.2f} s "
        f"({x(s['diffkit_hash_stage_over_floor'], 2)} the floor), search {stage['search']:.2f} s, "
        f"verification {stage['verify']:.2f} s."
    )


def _compare(ours: float, theirs: float) -> str:
    return "wins" if ours > theirs else "ties" if ours == theirs else "loses"


def _versus_best(s: dict[str, Any], timings: dict[str, Any]) -> str:
    """Against imagededup at the threshold that suits it best (highest F1 on the planted pairs)."""
    precision = _compare(float(s["diffkit_precision"]), float(s["imagededup_best_precision"]))
    recall = _compare(float(s["diffkit_recall_planted"]), float(s["imagededup_best_recall_planted"]))
    speed = _compare(float(s["speedup_vs_imagededup_at_its_best"]), 1.0)
    verdict = f"diffkit {precision} on precision, {recall} on recall and {speed} on speed. "
    return verdict + (
        f"Against imagededup at its own best threshold ({s['imagededup_best_threshold']}: recall "
        f"{s['imagededup_best_recall_planted']:.3f}, precision {s['imagededup_best_precision']:.3f}, "
        f"{s['imagededup_best_seconds']:.2f} s), diffkit (threshold {s['threshold']} with its thumbnail "
        f"check, decode draft-L-64) finds recall {s['diffkit_recall_planted']:.3f} at precision "
        f"{s['diffkit_precision']:.3f} in {s['diffkit_s']:.2f} s: "
        f"{x(s['speedup_vs_imagededup_at_its_best'], 2)} faster. diffkit's own best threshold is "
        f"{s['diffkit_best_threshold']} (recall {s['diffkit_best_recall_planted']:.3f}, precision "
        f"{s['diffkit_best_precision']:.3f}); at imagededup's default threshold "
        f"{s['imagededup_default_threshold']} imagededup finds recall "
        f"{s['imagededup_at_default_recall_planted']:.3f} at precision "
        f"{s['imagededup_at_default_precision']:.3f}. With a full decode, as imagededup decodes, diffkit "
        f"takes {timings['diffkit_full_decode_s']:.2f} s (one run, not alternated): diffkit "
        f"{_compare(float(s['speedup_vs_imagededup_full_decode']), 1.0)} on speed there."
    )


def block(report: dict[str, Any]) -> str:
    s, data = report["summary"], report["data"]
    setup = (
        f"Setup: {s['images']:,} JPEGs ({s['megabytes']:.1f} MB), threshold {s['threshold']}, "
        f"{s['workers']} workers; report created {report['created']}."
    )
    timings = table(
        ["step", "wall time"], [[label, f"{data['timings'][key]:.2f} s"] for key, label in _STEPS.items()]
    )
    derived = (
        f"diffkit is {x(s['speedup_vs_imagededup'], 2)} faster than imagededup at the same threshold "
        f"({s['diffkit_images_per_s']:.1f} images/s); its reduced-scale decode is "
        f"{x(s['draft_vs_full_decode'], 2)} faster than a full decode."
    )
    agreement = data["agreement"]
    pairs = agreement["both"] + agreement["diffkit_only"] + agreement["imagededup_only"]
    agree = (
        f"Pairs found by both tools: {agreement['both']} of {pairs} distinct pairs "
        f"(diffkit only {agreement['diffkit_only']}, imagededup only {agreement['imagededup_only']}; "
        f"Jaccard {agreement['jaccard']:.3f}). Planted pairs, recall / precision: diffkit "
        f"{s['diffkit_recall_planted']:.3f} / {s['diffkit_precision']:.3f}, imagededup "
        f"{s['imagededup_recall_planted']:.3f} / {s['imagededup_precision']:.3f}."
    )
    sweep = table(
        ["threshold T", "pairs found", "recall of planted pairs", "precision of found pairs"],
        [
            [str(r["threshold"]), str(r["pairs"]), f"{r['recall_planted']:.3f}", f"{r['precision']:.3f}"]
            for r in data["sweep"]
            if r["threshold"] % 2 == 0  # pHash distances are even: odd T equals the T below it
        ],
    )
    split = s["per_file_ms_one_core"]
    parts = [setup, timings, derived, _floor(s, split), _versus_best(s, data["timings"]), agree, sweep]
    return "\n\n".join(parts)
