"""bench_dedupe's reading: diffkit dedupe against imagededup's ``PHash().find_duplicates``."""

from __future__ import annotations

from typing import Any

from benchmarks.readings.figures import table, x

REPORT = "dedupe"
COMMAND = "python -m benchmarks.bench_dedupe"
PEER = "imagededup `PHash().find_duplicates`"

_STEPS = {
    "imagededup_s": "imagededup `PHash().find_duplicates`",
    "diffkit_s": "diffkit dedupe (draft decode, empty cache)",
    "diffkit_full_decode_s": "diffkit dedupe, full decode",
    "diffkit_cached_s": "diffkit dedupe rerun (cache warm)",
    "search_100000_random_s": "diffkit search alone, 100,000 random hashes",
    "decode_floor_s": "decode floor: read + entropy-decode every file at 1/8 scale, nothing else",
}


def headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"{s['images']:,} JPEGs ({s['megabytes']:.0f} MB), threshold {s['threshold']}, median of "
        f"{s['repeats']} alternating rounds: {s['diffkit_s']:.1f} s vs {s['imagededup_s']:.1f} s "
        f"({x(s['speedup_vs_imagededup'])}; decoding alone takes {s['decode_floor_s']:.1f} s: with the "
        f"cheapest pHash added, no libjpeg-based tool could exceed "
        f"{x(s['max_speedup_vs_imagededup_with_cheapest_phash'])}); "
        f"pair precision {s['diffkit_precision']:.3f} vs "
        f"{s['imagededup_precision']:.3f}; cached rerun {s['diffkit_cached_rerun_s']:.2f} s; "
        f"1,000,000 hashes searched at 8 bits in {s['search_1000000_random_t8_s']:.1f} s"
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
        f"diffkit is {x(s['speedup_vs_imagededup'], 2)} faster than imagededup "
        f"({s['diffkit_images_per_s']:.1f} images/s); draft decode is {x(s['draft_vs_full_decode'], 2)} "
        "faster than a full decode. Entropy decoding alone (libjpeg's cheapest 1/8 scale, greyscale, "
        f"same workers) takes {s['decode_floor_s']:.2f} s: diffkit takes "
        f"{x(s['diffkit_over_decode_floor'], 2)} that floor, and imagededup / floor = "
        f"{x(s['max_speedup_vs_imagededup_at_decode_floor'], 2)} is the most any tool that "
        "decodes these JPEGs through libjpeg could gain over imagededup before it hashes anything; adding "
        "the cheapest pHash measured here (from a 1/8-scale decode) lowers that to "
        f"{x(s['max_speedup_vs_imagededup_with_cheapest_phash'], 2)}."
    )
    split, stage = s["per_file_ms_one_core"], s["diffkit_stage_s"]
    where = (
        f"Where diffkit's time goes, per run (median): hashing {stage['hash']:.2f} s (the worker pool), "
        f"search {stage['search']:.2f} s, verification {stage['verify']:.2f} s. Per file on one core: "
        f"read + sha256 {split['read_sha256']:.2f} ms, decode {split['decode']:.2f} ms, "
        f"pHash {split['phash']:.2f} ms, thumbnail {split['thumbnail']:.2f} ms; the decode floor alone "
        f"{split['floor_decode_1_8_L']:.2f} ms; "
        f"a decode at 1/8 scale for the hash (not diffkit's path) {split['alt_decode_1_8_YCbCr']:.2f} ms, "
        f"with its pHash {split['alt_phash_from_1_8']:.2f} ms."
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
    return "\n\n".join([setup, timings, derived, where, agree, sweep])
