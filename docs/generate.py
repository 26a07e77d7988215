"""Regenerate the parts of the documentation that are derived from the code and the committed reports.

    python docs/generate.py            # rewrite docs/cli/*.txt and the generated blocks in the Markdown
    python docs/generate.py --check    # change nothing; exit 1 and name the files that are out of date

What it writes:

- ``docs/cli/<command>.txt``: the ``--help`` of every ``diffkit`` command (and of the local fake-face
  site), rendered at a fixed width without colour so the files are stable (as NVlabs/edm does);
- the block between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->`` in README.md: the
  benchmark headline table, built from ``reports/bench_*.json`` only;
- the ``bench-*`` blocks of docs/benchmarks.md (every benchmark table, from the same JSON files) and the
  ``presets-table`` block of docs/train.md (parameters and FLOPs counted from the code).

tests/test_docs.py fails when any of these differ from what this script would write, so a changed help
text, report or preset cannot leave the documentation behind silently.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
CLI_DIR = ROOT / "docs" / "cli"
COMMANDS = ("scrape", "dedupe", "train", "phema", "sample", "eval", "export", "report", "demo")
HELP_WIDTH = 100

# `diffkit ...` through its real entry point, with argv[0] set so the usage line says "diffkit".
_DIFFKIT = "import sys; sys.argv[0] = 'diffkit'; from diffkit.cli import main; main()"


# ---------------------------------------------------------------------------------------------- help


def _help_env() -> dict[str, str]:
    """A minimal environment: fixed width, no colour, UTF-8; nothing inherited that forces a terminal."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "COLUMNS": str(HELP_WIDTH),
        "LINES": "50",
        "TERMINAL_WIDTH": str(HELP_WIDTH),  # typer's rich help reads this before COLUMNS
        "TERM": "dumb",
        "NO_COLOR": "1",
        "PYTHONIOENCODING": "utf-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    return env


def _run_help(argv: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=_help_env(),
        cwd=ROOT,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def help_texts() -> dict[str, str]:
    """File name under docs/cli/ -> the help text it must hold."""
    texts = {"diffkit.txt": _run_help(["-c", _DIFFKIT, "--help"])}
    for command in COMMANDS:
        texts[f"{command}.txt"] = _run_help(["-c", _DIFFKIT, command, "--help"])
    texts["fakesite.txt"] = _run_help(["-m", "diffkit.fakesite", "--help"])
    return texts


# ------------------------------------------------------------------------------------------ reports


def load_report(name: str, reports: Path = REPORTS) -> dict[str, Any]:
    return json.loads((reports / f"bench_{name}.json").read_text(encoding="utf-8"))


def _sci(value: float) -> str:
    """1 significant digit in the short form people write: 3.95e-05 -> 4e-5."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _x(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}x"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _scrape_headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"at a {s['R (req/s cap)']:g} req/s cap and {s['L (s)']:g} s latency: "
        f"{s['diffkit kept/s']:.1f} kept/s vs {s['peer kept/s']:.1f} "
        f"({s['diffkit 429s']:g} vs {s['peer 429s']:g} 429s); client CPU per kept "
        f"image {s['diffkit CPU ms/kept']:.1f} ms vs {s['peer CPU ms/kept']:.1f} ms "
        f"({s['CPU ratio diffkit/peer (median of rounds)']:.1f}x; validating each image is "
        f"{s['validation now ms/image']:.1f} ms of it)"
    )


def _dedupe_headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"{s['images']:,} JPEGs ({s['megabytes']:.0f} MB), threshold {s['threshold']}, median of "
        f"{s['repeats']} alternating rounds: {s['diffkit_s']:.1f} s vs {s['imagededup_s']:.1f} s "
        f"({_x(s['speedup_vs_imagededup'])}; decoding alone takes {s['decode_floor_s']:.1f} s: with the "
        f"cheapest pHash added, no libjpeg-based tool could exceed "
        f"{_x(s['max_speedup_vs_imagededup_with_cheapest_phash'])}); "
        f"pair precision {s['diffkit_precision']:.3f} vs "
        f"{s['imagededup_precision']:.3f}; cached rerun {s['diffkit_cached_rerun_s']:.2f} s; "
        f"1,000,000 hashes searched at 8 bits in {s['search_1000000_random_t8_s']:.1f} s"
    )


def _dedupe_quality_headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    largest = max(s["sizes"])
    return (
        f"{largest:,} eye-aligned faces + 10% planted copies: pair precision "
        f"{s[f'precision_{largest}']:.3f}, recall {s[f'recall_{largest}']:.3f}, "
        f"{s[f'false_clusters_{largest}']} false clusters (also at "
        + ", ".join(f"{size:,}" for size in s["sizes"] if size != largest)
        + ")"
    )


def _train_headline(report: dict[str, Any]) -> str:
    ratios = report["data"]["ratios"]
    values = [row["speed_ratio_diffkit_over_diffusers"] for row in ratios]
    resolutions = "/".join(str(r) for r in sorted({row["resolution"] for row in ratios}))
    precisions = "/".join(sorted({row["precision"] for row in ratios}, key=lambda p: p != "fp32"))
    text = (
        f"`{report['summary']['preset']}` preset: training img/s ratio {min(values):.2f}-{max(values):.2f} "
        f"at {resolutions} px, {precisions} (eager, same AdamW)"
    )
    shipped = [row["shipped_ratio_over_diffusers"] for row in ratios if "shipped_ratio_over_diffusers" in row]
    if shipped:
        text += f"; as shipped (fused AdamW) vs its example {min(shipped):.2f}-{max(shipped):.2f}"
    compiled = [row for row in report["data"].get("levers", []) if row["contender"] == "diffkit+compile"]
    if compiled:
        text += "; compiled vs compiled " + "/".join(
            f"{row['vs diffusers+compile ratio_median']:.2f}" for row in compiled
        )
    efficiency = report["summary"].get("scaling_efficiency_2_ranks")
    if efficiency is not None:
        text += f"; 2 gloo ranks vs 1 (1 thread each): scaling efficiency {efficiency:.2f}"
    return text


def _eval_headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"{s['n_generated']} vs {s['n_reference']} images: cold {s['cold_ratio']:.2f}x the time, "
        f"cached rerun {s['rerun_ratio']:.2f}x; FID step at N={s['big_n']}: {s['big_n_ratio']:.2f}x; "
        f"Inception pass alone {s['extraction_ratio']:.2f}x; FID equal to "
        f"{_sci(s['fid_relative_difference'])} relative (generated Inception weights)"
    )


def _sample_headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"tiny model at {s['resolution']} px, {s['n_images']} images, FD in pooled pixel space: within 5% of "
        f"DDPM-1000 (or better) at {s['dpmpp_steps_within_5pct']} DPM++ steps and "
        f"{s['ddim_steps_within_5pct']} DDIM steps; {s['s_per_image_ddpm1000']:.2f} s vs "
        f"{s['s_per_image_dpmpp20']:.2f} s per image (DDPM-1000 vs DPM++ 20, 4-image calls that include "
        "loading the snapshot)"
    )


def _quality_headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    b, b3 = s["budget_s"], s["budget_3x_s"]

    def pair(space: str, name: str) -> str:
        return f"{s[f'fd_{space}_{name}_B']:.3g} / {s[f'fd_{space}_{name}_3B']:.3g}"

    return (
        f"{s['n_train']:,} procedural {s['resolution']} px faces, {b:g} s / {b3:g} s of training, "
        f"{len(s['seeds'])} seeds, {s['n_samples']} DDIM-50 samples: FD on 8x8 pixels "
        f"{pair('pixels', 'diffkit')} vs {pair('pixels', 'recipe_fp32')} "
        f"(bf16 {pair('pixels', 'recipe_bf16')}), "
        f"floor {s['floor_fd_pixels']:.2g}; random-weight Inception FD {pair('inception', 'diffkit')} vs "
        f"{pair('inception', 'recipe_fp32')}, floor {s['floor_fd_inception']:.3g}; diffkit's distance to the "
        f"floor over the recipe's: pixels {s['gap_ratio_pixels_B']:.2f} / {s['gap_ratio_pixels_3B']:.2f}, "
        f"Inception {s['gap_ratio_inception_B']:.2f} / {s['gap_ratio_inception_3B']:.2f}"
    )


def _train_profile_headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"`{s['preset']}` preset, batch {s['batch_size']}, as shipped vs its example, operators' self time: "
        f"convolutions and matrix products (the same kernels in both) are {s['diffkit_dense_share_min']:.0%}-"
        f"{s['diffkit_dense_share_max']:.0%} of diffkit's step; a {s['goal']}x step needs "
        f"{s['glue_cut_needed_min']:.0%}-{s['glue_cut_needed_max']:.0%} of the rest removed (ceiling with "
        f"the rest free: {s['ceiling_if_glue_free_min']:.2f}-{s['ceiling_if_glue_free_max']:.2f})"
    )


def _gap_ratio(
    rows: list[dict[str, Any]], name: str, budget: float, space: str = "pixels", baseline: str = "defaults"
) -> float:
    """A lever's distance to the floor over the baseline's (median FD minus the floor, same run)."""

    def gap(variant: str) -> float:
        row = next(r for r in rows if r["variant"] == variant and r["budget_s"] == budget)
        return row[f"gap_fd_{space}"]

    return gap(name) / gap(baseline)


def _baseline(report: dict[str, Any]) -> str:
    """The variant a lever run compares with (reports before ``--baseline`` existed: the defaults)."""
    return report["summary"].get("baseline", "defaults")


def _levers_headline(report: dict[str, Any]) -> str:
    s, rows = report["summary"], report["data"]["rows"]
    b, b3 = s["budget_s"], s["budget_3x_s"]
    baseline = _baseline(report)
    names = sorted(dict.fromkeys(r["variant"] for r in rows), key=lambda name: name != baseline)

    def fd(name: str, budget: float) -> float:
        return next(r["fd_pixels"] for r in rows if r["variant"] == name and r["budget_s"] == budget)

    cells = "; ".join(f"{name} {fd(name, b):.3g} / {fd(name, b3):.3g}" for name in names)
    return (
        f"one change each from `{baseline}`, {b:g} s / {b3:g} s of training, {len(s['seeds'])} seeds; FD on "
        f"8x8 pixels (floor {s['floor_fd_pixels']:.2g}): {cells}"
    )


_HEADLINES: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "scrape": ("8 threads, one shared `httpx.Client`, sleeping on Retry-After", _scrape_headline),
    "dedupe": ("imagededup `PHash().find_duplicates`", _dedupe_headline),
    "dedupe_quality": ("hash-only pHash at 4 bits (the earlier default)", _dedupe_quality_headline),
    "train": ("diffusers `UNet2DModel`, matched size", _train_headline),
    "eval": ("`torch_fidelity.calculate_metrics`", _eval_headline),
    "sample": ("DDPM with 1,000 steps (the reference sampler)", _sample_headline),
    "quality": (
        "diffusers `train_unconditional.py` recipe (fp32; bf16), matched size, equal seconds",
        _quality_headline,
    ),
    "quality_levers": ("diffkit's defaults, in the same run", _levers_headline),
    "quality_levers_2": ("diffkit's defaults, in the same run", _levers_headline),
    "quality_levers_3": ("diffkit's defaults, in the same run", _levers_headline),
    "quality_small_aligned": ("`small` before its alignment, in the same run", _levers_headline),
    "train_profile": ("diffusers `UNet2DModel`, matched size", _train_profile_headline),
}
# Reports written by another script's mode: the command that writes them.
_COMMANDS = {
    "quality_levers": "python benchmarks/bench_quality.py --levers",
    "quality_levers_2": "python benchmarks/bench_quality.py --levers --lever-names ... --report-name ..._2",
    "quality_levers_3": "python benchmarks/bench_quality.py --levers --lever-names ... --report-name ..._3",
    "quality_small_aligned": (
        "python benchmarks/bench_quality.py --levers --baseline preset_small "
        "--lever-names small_unaligned ..."
    ),
}


def readme_bench_table(reports: Path = REPORTS) -> str:
    """The README's benchmark headline table; every figure in it is read from reports/bench_*.json."""
    rows = []
    for name, (peer, headline) in _HEADLINES.items():
        report = load_report(name, reports)
        rows.append(
            [
                f"`{_COMMANDS.get(name, f'python benchmarks/bench_{name}.py')}`",
                peer,
                headline(report),
                f"[bench_{name}](reports/bench_{name}.html)",
            ]
        )
    return _table(["benchmark", "peer", "headline (2-core CPU)", "report"], rows)


def _bench_scrape_block(reports: Path) -> str:
    report = load_report("scrape", reports)
    s = report["summary"]
    setup = (
        f"Setup: N = {s['N']}, cap R = {s['R (req/s cap)']:g} req/s, latency L = {s['L (s)']:g} s, "
        f"{s['image px']} px JPEGs, concurrency {s['concurrency']}; report created {report['created']}."
    )
    rows = [
        [
            row["contender"],
            str(row["kept"]),
            str(row["requests"]),
            f"{row['seconds']:.1f}",
            str(row["http_429"]),
            f"{row['kept_per_s']:.2f}",
            f"{row['fraction_of_cap']:.0%}",
            f"{row['cpu_ms_per_kept']:.1f}",
        ]
        for row in report["data"]["rows"]
    ]
    header = ["contender", "kept", "requests", "s", "429s", "kept/s", "of R", "client CPU ms per kept image"]
    return setup + "\n\n" + _table(header, rows)


_DEDUPE_STEPS = {
    "imagededup_s": "imagededup `PHash().find_duplicates`",
    "diffkit_s": "diffkit dedupe (draft decode, empty cache)",
    "diffkit_full_decode_s": "diffkit dedupe, full decode",
    "diffkit_cached_s": "diffkit dedupe rerun (cache warm)",
    "search_100000_random_s": "diffkit search alone, 100,000 random hashes",
    "decode_floor_s": "decode floor: read + entropy-decode every file at 1/8 scale, nothing else",
}


def _bench_dedupe_block(reports: Path) -> str:
    report = load_report("dedupe", reports)
    s, data = report["summary"], report["data"]
    setup = (
        f"Setup: {s['images']:,} JPEGs ({s['megabytes']:.1f} MB), threshold {s['threshold']}, "
        f"{s['workers']} workers; report created {report['created']}."
    )
    timings = _table(
        ["step", "wall time"],
        [[label, f"{data['timings'][key]:.2f} s"] for key, label in _DEDUPE_STEPS.items()],
    )
    derived = (
        f"diffkit is {_x(s['speedup_vs_imagededup'], 2)} faster than imagededup "
        f"({s['diffkit_images_per_s']:.1f} images/s); draft decode is {_x(s['draft_vs_full_decode'], 2)} "
        "faster than a full decode. Entropy decoding alone (libjpeg's cheapest 1/8 scale, greyscale, "
        f"same workers) takes {s['decode_floor_s']:.2f} s: diffkit takes "
        f"{_x(s['diffkit_over_decode_floor'], 2)} that floor, and imagededup / floor = "
        f"{_x(s['max_speedup_vs_imagededup_at_decode_floor'], 2)} is the most any tool that "
        "decodes these JPEGs through libjpeg could gain over imagededup before it hashes anything; adding "
        "the cheapest pHash measured here (from a 1/8-scale decode) lowers that to "
        f"{_x(s['max_speedup_vs_imagededup_with_cheapest_phash'], 2)}."
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
    sweep = _table(
        ["threshold T", "pairs found", "recall of planted pairs", "precision of found pairs"],
        [
            [str(r["threshold"]), str(r["pairs"]), f"{r['recall_planted']:.3f}", f"{r['precision']:.3f}"]
            for r in data["sweep"]
            if r["threshold"] % 2 == 0  # pHash distances are even: odd T equals the T below it
        ],
    )
    return "\n\n".join([setup, timings, derived, where, agree, sweep])


def _bench_train_block(reports: Path) -> str:
    report = load_report("train", reports)
    s, data = report["summary"], report["data"]
    setup = (
        f"Setup: preset `{s['preset']}`, batch {s['batch_size']}, {s['timed_steps']} timed steps per cell, "
        f"{s['torch_threads']} torch thread, {s['cpu_count']} CPUs, torch {s['torch']}; "
        f"matmul peaks measured in the run: {s['peak_fp32_gflops']:g} GFLOP/s fp32, "
        f"{s['peak_bf16_gflops']:g} GFLOP/s bf16; "
        f"1-minute load average {s['load_avg_1min_before']:g} before, {s['load_avg_1min_after']:g} after; "
        f"report created {report['created']}."
    )
    params = {(m["model"], m["resolution"]): m["params_m"] for m in data["measurements"]}
    rows = [
        [
            f"{r['resolution']} px",
            r["precision"],
            f"{r['diffkit_img_s']:.2f}",
            f"{r['diffusers_img_s']:.2f}",
            _x(r["speed_ratio_diffkit_over_diffusers"], 2),
            _x(r["shipped_ratio_over_diffusers"], 2) if "shipped_ratio_over_diffusers" in r else "",
            f"{r['diffkit_mfu']:.0%}",
            f"{r['diffusers_mfu']:.0%}",
            f"{params[('diffkit', r['resolution'])]:.1f} M / {params[('diffusers', r['resolution'])]:.1f} M",
        ]
        for r in data["ratios"]
    ]
    header = [
        "resolution",
        "precision",
        "diffkit img/s",
        "diffusers img/s",
        "speed ratio",
        "as shipped (fused AdamW)",
        "diffkit MFU",
        "diffusers MFU",
        "params (diffkit / diffusers)",
    ]
    blocks = [setup, _table(header, rows)]
    levers = data.get("levers", [])
    if levers:
        blocks.append(
            _table(
                ["lever", "against", "resolution", "precision", "speed ratio (rounds)", "compile warm-up"],
                [
                    [
                        f"`{r['contender']}`",
                        f"`{r['baseline']}`",
                        f"{r['resolution']} px",
                        r["precision"],
                        f"{_x(r['ratio_median'], 2)} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})",
                        f"{r['warmup_s']:g} s" if "compile" in r["contender"] else "",
                    ]
                    for r in levers
                ],
            )
        )
    scaling = data.get("scaling", [])
    if scaling:
        blocks.append(
            _table(
                ["DDP on the CPU (gloo)", "img/s (rounds)", "scaling efficiency", "MFU"],
                [
                    [
                        r["cell"],
                        f"{r['img_per_s']:.2f} ({r['img_per_s_min']:.2f}-{r['img_per_s_max']:.2f})",
                        "" if r["scaling_efficiency"] is None else f"{r['scaling_efficiency']:.2f}",
                        f"{r['mfu']:.0%}",
                    ]
                    for r in scaling
                ],
            )
        )
    return "\n\n".join(blocks)


def _bench_eval_block(reports: Path) -> str:
    report = load_report("eval", reports)
    s, data = report["summary"], report["data"]
    setup = (
        f"Setup: {s['n_generated']} generated vs {s['n_reference']} reference images, FID + KID + IS, "
        f"weights: {s['weights']}; report created {report['created']}."
    )
    rows = [
        [
            r["round"],
            f"{r['diffkit_s']:.1f} s",
            f"{r['torch_fidelity_s']:.1f} s",
            f"{r['ratio_diffkit_over_tf']:.2f}",
            str(r["diffkit_extracted"]),
        ]
        for r in data["rows"]
    ]
    table = _table(["round", "diffkit eval", "torch-fidelity", "ratio", "images diffkit extracted"], rows)
    mean = (
        f"Cold, mean of both orders: diffkit {s['cold_diffkit_s']:.1f} s, torch-fidelity "
        f"{s['cold_torch_fidelity_s']:.1f} s (ratio {s['cold_ratio']:.2f}); cached re-run: "
        f"{s['rerun_diffkit_s']:.1f} s vs {s['rerun_torch_fidelity_s']:.1f} s (ratio {s['rerun_ratio']:.2f})."
    )
    first = data["values"][data["rows"][0]["round"]]
    inception = [v["diffkit_timings_s"]["features_inception"] for v in data["values"].values()]
    values = (
        f"FID: diffkit {first['diffkit_fid']:.4f}, torch-fidelity {first['tf_fid']:.4f} (relative difference "
        f"{_sci(s['fid_relative_difference'])}); KID and IS identical. diffkit's Inception pass took "
        f"{max(inception[:2]):.0f} s cold and {min(inception):.3f} s from its feature cache."
    )
    return "\n\n".join([setup, table, mean, values])


def _bench_train_profile_block(reports: Path) -> str:
    report = load_report("train_profile", reports)
    s, cells = report["summary"], report["data"]["cells"]
    setup = (
        f"Setup: preset `{s['preset']}`, batch {s['batch_size']}, {s['rounds']} rounds x {s['steps']} "
        f"profiled steps per model and cell, {s['threads']} torch threads; 1-minute load average "
        f"{s['load_before'][0]:.2f} before, {s['load_after'][0]:.2f} after; report created "
        f"{report['created']}."
    )
    groups = [
        "convolution",
        "matmul_attention",
        "normalization",
        "optimizer",
        "elementwise_other",
        "untracked",
    ]
    rows = []
    for name, cell in cells.items():
        for model in ("diffkit+fused", "diffusers"):
            rows.append([name.replace("_", " "), f"`{model}`", *(f"{cell[model][g]:.1f}" for g in groups),
                         f"{cell[model]['total']:.1f} ({cell[model]['total_min']:.1f}-"
                         f"{cell[model]['total_max']:.1f})"])  # fmt: skip
    split = _table(["cell", "model", *groups, "step ms (rounds)"], rows)
    limit_rows = [
        [
            name.replace("_", " "),
            _x(c["limits"]["ratio_profiled"], 2),
            f"{c['limits']['diffkit_dense_share']:.0%}",
            f"{c['limits']['dense_ms_diffkit_over_diffusers']:.2f}",
            _x(c["limits"]["ceiling_if_glue_free"], 2),
            f"{c['limits']['glue_cut_needed_for_goal']:.0%}",
        ]
        for name, c in cells.items()
    ]
    header = ["cell", "ratio (profiled)", "dense share of diffkit's step", "dense ms diffkit / diffusers",
              "ceiling if the rest were free", f"diffkit's rest to remove for {s['goal']}x"]  # fmt: skip
    return "\n\n".join([setup, split, _table(header, limit_rows)])


def _bench_quality_block(reports: Path) -> str:
    report = load_report("quality", reports)
    s, rows = report["summary"], report["data"]["rows"]
    b, b3 = s["budget_s"], s["budget_3x_s"]
    setup = (
        f"Setup: {s['n_train']:,} procedural {s['resolution']} px faces, budgets {b:g} s and {b3:g} s, seeds "
        f"{', '.join(str(x) for x in s['seeds'])}, {s['n_samples']} DDIM-50 samples per job, {s['workers']} "
        f"jobs at a time (1 thread each), 1-minute load {s['load_avg_before'][0]:.1f} before; floor: pixels "
        f"{s['floor_fd_pixels']:.2f}, Inception {s['floor_fd_inception']:.1f}; "
        f"report created {report['created']}."
    )

    def cell(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.3g} ({row[f'{key}_min']:.3g}-{row[f'{key}_max']:.3g})"

    table = _table(
        ["contender", "budget", "steps", "images seen", "pixel FD", "Inception FD"],
        [[f"`{r['contender']}`", f"{r['budget_s']:g} s", f"{r['steps_median']:g}",
          f"{r['images_seen_median']:,.0f}", cell(r, "fd_pixels"), cell(r, "fd_inception")] for r in rows],
    )  # fmt: skip
    goals = (
        f"diffkit's distance to the floor over the recipe's (fp32), at {b:g} s / {b3:g} s: pixels "
        f"{s['gap_ratio_pixels_B']:.2f} / {s['gap_ratio_pixels_3B']:.2f}, Inception "
        f"{s['gap_ratio_inception_B']:.2f} / {s['gap_ratio_inception_3B']:.2f}. diffkit at {b:g} s reaches "
        f"the recipe at {b3:g} s: pixels {s['diffkit_at_B_reaches_recipe_fp32_at_3B_pixels']}, Inception "
        f"{s['diffkit_at_B_reaches_recipe_fp32_at_3B_inception']}. Cells: median over seeds (min-max)."
    )
    return "\n\n".join([setup, table, goals])


def _bench_levers_block(
    reports: Path, name: str = "quality_levers", against: tuple[str, str] | None = None
) -> str:
    """The lever table; ``against`` = (variant, other) adds one line: variant's distance to the floor
    over other's, per space and budget (e.g. today's defaults against the issue-time ones)."""
    report = load_report(name, reports)
    s, rows = report["summary"], report["data"]["rows"]
    b, b3 = s["budget_s"], s["budget_3x_s"]
    baseline = _baseline(report)
    setup = (
        f"Setup: {s['n_train']:,} procedural {s['resolution']} px faces, baseline `{baseline}`, budgets "
        f"{b:g} s and {b3:g} s, seeds {', '.join(str(x) for x in s['seeds'])}, {s['n_samples']} DDIM-50 "
        f"samples per job, {s['workers']} jobs at a time (1 thread each); floor: pixels "
        f"{s['floor_fd_pixels']:.2f}, Inception {s['floor_fd_inception']:.1f}; "
        f"report created {report['created']}."
    )

    def cell(name: str, budget: float, key: str) -> str:
        r = next(r for r in rows if r["variant"] == name and r["budget_s"] == budget)
        spread = f"{r[f'{key}_min']:.3g}-{r[f'{key}_max']:.3g}"
        ratio = _gap_ratio(rows, name, budget, key.removeprefix("fd_"), baseline)
        return f"{r[key]:.3g} ({spread}; {ratio:.2f})"

    names = sorted(dict.fromkeys(r["variant"] for r in rows), key=lambda name: name != baseline)
    table = _table(
        ["variant", f"pixel FD, {b:g} s", f"pixel FD, {b3:g} s", f"Inception FD, {b:g} s",
         f"Inception FD, {b3:g} s"],
        [[f"`{n}`", cell(n, b, "fd_pixels"), cell(n, b3, "fd_pixels"), cell(n, b, "fd_inception"),
          cell(n, b3, "fd_inception")] for n in names],
    )  # fmt: skip
    note = (
        f"Each cell: median FD over seeds (min-max; the distance to the floor relative to `{baseline}`'s "
        "in the same run, below 1 is better)."
    )
    blocks = [setup, table, note]
    if against is not None:
        variant, other = against
        ratios = {
            space: " / ".join(f"{_gap_ratio(rows, variant, budget, space, other):.2f}" for budget in (b, b3))
            for space in ("pixels", "inception")
        }
        blocks.append(
            f"`{variant}`'s distance to the floor over `{other}`'s, at {b:g} s / {b3:g} s: pixels "
            f"{ratios['pixels']}, Inception {ratios['inception']}."
        )
    return "\n\n".join(blocks)


def benchmark_blocks(reports: Path = REPORTS) -> dict[str, str]:
    """Marker name in docs/benchmarks.md -> its content, all from reports/bench_*.json."""
    return {
        "bench-scrape": _bench_scrape_block(reports),
        "bench-dedupe": _bench_dedupe_block(reports),
        "bench-train": _bench_train_block(reports),
        "bench-eval": _bench_eval_block(reports),
        "bench-train-profile": _bench_train_profile_block(reports),
        "bench-quality": _bench_quality_block(reports),
        "bench-quality-levers": _bench_levers_block(reports),
        "bench-quality-levers-2": _bench_levers_block(reports, "quality_levers_2"),
        "bench-quality-levers-3": _bench_levers_block(reports, "quality_levers_3", ("batch_32", "lr_2e-4")),
        "bench-quality-small-aligned": _bench_levers_block(
            reports, "quality_small_aligned", ("preset_small", "small_unaligned")
        ),
    }


# ------------------------------------------------------------------------------------------ presets


def presets_table() -> str:
    """The U-Net presets: shape from the config, parameters and forward FLOPs counted from the code."""
    from diffkit.models.config import PRESETS, preset_config
    from diffkit.models.stats import count_parameters, flops_per_image
    from diffkit.models.unet import UNet

    rows = []
    for name, preset in PRESETS.items():
        cells = [
            f"`{name}`",
            str(preset.channels),
            ", ".join(str(preset.channels * m) for m in preset.channel_mults),
            str(preset.num_res_blocks),
            ", ".join(str(r) for r in preset_config(name, 64).attention_resolutions),
            f"{preset.dropout:g}",
        ]
        for resolution in (32, 64):
            model = UNet(preset_config(name, resolution))
            cells.append(f"{count_parameters(model) / 1e6:.2f} M")
            cells.append(f"{flops_per_image(model, resolution) / 1e9:.2f}")
        rows.append(cells)
    header = [
        "preset",
        "channels",
        "level widths",
        "res blocks",
        "attention at (64 px)",
        "dropout",
        "params 32 px",
        "GFLOPs/image 32 px",
        "params 64 px",
        "GFLOPs/image 64 px",
    ]
    return _table(header, rows)


# ------------------------------------------------------------------------------------------- markers


def replace_block(text: str, name: str, content: str) -> str:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->`` (markers kept)."""
    pattern = re.compile(rf"(<!-- {re.escape(name)}:start -->\n)(.*?)(<!-- {re.escape(name)}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"markers for {name!r} not found")
    return pattern.sub(lambda m: m.group(1) + content.rstrip("\n") + "\n" + m.group(3), text, count=1)


def block(text: str, name: str) -> str:
    """The content between the markers of ``name`` (without a trailing newline)."""
    match = re.search(rf"<!-- {re.escape(name)}:start -->\n(.*?)<!-- {re.escape(name)}:end -->", text, re.S)
    if not match:
        raise ValueError(f"markers for {name!r} not found")
    return match.group(1).rstrip("\n")


def expected_files() -> dict[Path, str]:
    """Every generated file with the full text it must hold."""
    files = {CLI_DIR / name: text for name, text in help_texts().items()}
    readme = ROOT / "README.md"
    files[readme] = replace_block(readme.read_text(encoding="utf-8"), "bench-table", readme_bench_table())
    bench = ROOT / "docs" / "benchmarks.md"
    text = bench.read_text(encoding="utf-8")
    for name, content in benchmark_blocks().items():
        text = replace_block(text, name, content)
    files[bench] = text
    train = ROOT / "docs" / "train.md"
    files[train] = replace_block(train.read_text(encoding="utf-8"), "presets-table", presets_table())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected_files().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    verb = "out of date" if args.check else "rewritten"
    for path in stale:
        print(f"{verb}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
