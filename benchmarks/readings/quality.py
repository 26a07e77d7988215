"""bench_quality's readings: quality per compute against two peers under the peer protocol (diffusers'
``train_unconditional.py`` recipe and lucidrains' ``denoising-diffusion-pytorch``, each as shipped and at
the best setting of its own sweep, on measured CPU-second budgets), the peers' sweeps, and the lever runs
(one change each from a baseline, in the same harness).

The gap ratio (diffkit's distance to the floor over the other's) is computed here from the rows' median
distances to the floor, not read from the summary, where it is rounded to 3 digits: 0.745 there was
0.74514 before rounding, so it reads 0.75 at two digits.
"""

from __future__ import annotations

from typing import Any

from benchmarks.readings.figures import count, table

REPORT = "quality"
COMMAND = "python -m benchmarks.bench_quality"
PEER = (
    "the better of diffusers' `train_unconditional.py` recipe and lucidrains' `denoising-diffusion-pytorch`, "
    "each as shipped and at the best of its 12-setting sweep; matched size; measured CPU-second budgets"
)
LEVERS_PEER = "diffkit's defaults, in the same run"
# Lever reports written by bench_quality's --levers mode: the command that writes each one.
LEVER_COMMANDS = {
    "quality_levers": "python -m benchmarks.bench_quality --levers",
    "quality_levers_2": "python -m benchmarks.bench_quality --levers --lever-names ... --report-name ..._2",
    "quality_levers_3": "python -m benchmarks.bench_quality --levers --lever-names ... --report-name ..._3",
    "quality_small_aligned": "python -m benchmarks.bench_quality --levers --baseline preset_small "
    "--lever-names small_unaligned ...",
}
SMALL_ALIGNED_PEER = "`small` before its alignment, in the same run"
# The peers' tuning sweeps (bench_quality --peer-sweep): the command that writes each, and its baseline.
SWEEP_COMMANDS = {
    "quality_sweep_recipe": "python -m benchmarks.bench_quality --peer-sweep recipe --one-budget --seeds 0 "
    "--n-samples 128",
    "quality_sweep_ddpm": "python -m benchmarks.bench_quality --peer-sweep ddpm --one-budget --seeds 0 "
    "--n-samples 128",
}
SWEEP_PEERS = {
    "quality_sweep_recipe": "diffusers' recipe as shipped, in the same run",
    "quality_sweep_ddpm": "lucidrains' `Trainer` at its defaults, in the same run",
}


def _row(rows: list[dict[str, Any]], key: str, name: str, budget: float) -> dict[str, Any]:
    return next(r for r in rows if r[key] == name and r["budget_s"] == budget)


def gap_ratio(
    report: dict[str, Any], name: str, budget: float, space: str = "pixels", baseline: str | None = None
) -> Any:
    """``name``'s distance to the floor over ``baseline``'s (median FD minus the floor, same run)."""
    rows = report["data"]["rows"]
    key = "variant" if "variant" in rows[0] else "contender"
    other = baseline or (_baseline(report) if key == "variant" else "recipe-fp32")
    gap = f"gap_fd_{space}"
    return _row(rows, key, name, budget)[gap] / _row(rows, key, other, budget)[gap]


def _baseline(report: dict[str, Any]) -> str:
    """The variant a lever run compares with (reports before ``--baseline`` existed: the defaults)."""
    return report["summary"].get("baseline", "defaults")


SPACE_NAMES = {"pixels": "pixels", "inception": "Inception"}


def _against_best(report: dict[str, Any], space: str) -> str:
    """diffkit's distance to the floor over the best peer row's at B / 3B, each row named."""
    s = report["summary"]
    named = [(s["budget_s"], s[f"best_peer_{space}_B"]), (s["budget_3x_s"], s[f"best_peer_{space}_3B"])]
    return " / ".join(f"{gap_ratio(report, 'diffkit', b, space, name):.2f} (`{name}`)" for b, name in named)


def _against_defaults(report: dict[str, Any], peer: str) -> str:
    s = report["summary"]
    cells = [
        f"{SPACE_NAMES[space]} "
        + " / ".join(
            f"{gap_ratio(report, 'diffkit', b, space, peer):.2f}" for b in (s["budget_s"], s["budget_3x_s"])
        )
        for space in SPACE_NAMES
    ]
    return f"`{peer}` " + ", ".join(cells)


def losses(report: dict[str, Any]) -> list[str]:
    """Where a fairly set-up peer ends nearer the floor than diffkit: one phrase per peer row and space."""
    s = report["summary"]
    lost: dict[tuple[str, str], list[str]] = {}
    for space in SPACE_NAMES:
        for budget, tag in ((s["budget_s"], "B"), (s["budget_3x_s"], "3B")):
            best = s[f"best_peer_{space}_{tag}"]
            if gap_ratio(report, "diffkit", budget, space, best) > 1:
                lost.setdefault((best, space), []).append(f"{budget:g} s")
    return [
        f"to `{best}` in {SPACE_NAMES[space]} space at {' and '.join(at)}"
        for (best, space), at in lost.items()
    ]


def verdict(report: dict[str, Any]) -> str:
    """The sentence the README owes its reader: where diffkit loses, or that it loses nowhere here."""
    s, lost = report["summary"], losses(report)
    if lost:
        return "diffkit loses " + "; ".join(lost)
    b, b3 = s["budget_s"], s["budget_3x_s"]
    return f"diffkit is at least as near the floor as every peer row in both spaces at {b:g} s and {b3:g} s"


def headline(report: dict[str, Any]) -> str:
    """A report under the peer protocol: diffkit against the best peer row, and each peer as it ships."""
    s = report["summary"]
    b, b3 = s["budget_s"], s["budget_3x_s"]
    reaches = (
        s["vs_best_peer_diffkit_at_B_reaches_best_peer_at_3B_pixels"],
        s["vs_best_peer_diffkit_at_B_reaches_best_peer_at_3B_inception"],
    )
    return (
        f"{s['n_train']:,} procedural {s['resolution']} px faces, {b:g} s / {b3:g} s of measured CPU per "
        f"job, {count(s['seeds'])} seeds, {s['n_samples']} DDIM-50 samples; diffkit's distance to the floor "
        f"over the best peer row's (either peer, any setting), at {b:g} s / {b3:g} s: pixels "
        f"{_against_best(report, 'pixels')}, Inception {_against_best(report, 'inception')}; over the peers "
        f"as shipped: {_against_defaults(report, 'recipe-fp32')}; {_against_defaults(report, 'ddpm')}; "
        f"diffkit at {b:g} s reaches the best peer at {b3:g} s: pixels {_yes(reaches[0])}, Inception "
        f"{_yes(reaches[1])}; {verdict(report)}"
    )


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def block(report: dict[str, Any]) -> str:
    """The comparison under the peer protocol: measured budgets, both peers as shipped and tuned."""
    s, rows = report["summary"], report["data"]["rows"]
    b, b3 = s["budget_s"], s["budget_3x_s"]
    tuned = "; ".join(
        f"`{peer}-tuned` = `{s[f'{peer}_tuned_setting']}`"
        for peer in ("recipe", "ddpm")
        if f"{peer}_tuned_setting" in s
    )
    setup = (
        f"Setup: {s['n_train']:,} procedural {s['resolution']} px faces, budgets {b:g} s and {b3:g} s of "
        f"process CPU time per job (measured: jobs trained {s['budget_used_min']:.2f}-"
        f"{s['budget_used_max']:.2f}x their budget), seeds {', '.join(str(x) for x in s['seeds'])}, "
        f"{s['n_samples']} DDIM-50 samples per job, "
        f"{s['workers']} jobs at a time (1 thread each), 1-minute load {s['load_avg_before'][0]:.1f} before; "
        f"tuned settings (each peer's best of its sweep): {tuned}; floor: pixels {s['floor_fd_pixels']:.2f}, "
        f"Inception {s['floor_fd_inception']:.1f}; report created {report['created']}."
    )

    def cell(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.3g} ({row[f'{key}_min']:.3g}-{row[f'{key}_max']:.3g})"

    contenders = table(
        ["contender", "budget", "trained CPU s", "steps", "images seen", "training PFLOP", "pixel FD",
         "Inception FD"],
        [[f"`{r['contender']}`", f"{r['budget_s']:g} s", f"{r['train_cpu_s_median']:.0f}",
          f"{r['steps_median']:g}", f"{r['images_seen_median']:,.0f}", f"{r['train_pflops_median']:.3g}",
          cell(r, "fd_pixels"), cell(r, "fd_inception")] for r in rows],
    )  # fmt: skip
    reaches = {
        space: s[f"vs_best_peer_diffkit_at_B_reaches_best_peer_at_3B_{space}"] for space in SPACE_NAMES
    }
    goals = (
        f"diffkit's distance to the floor over the best peer row's (either peer, any setting; below 1 "
        f"diffkit is nearer), at {b:g} s / {b3:g} s: pixels {_against_best(report, 'pixels')}, Inception "
        f"{_against_best(report, 'inception')}. Over the peers as shipped: "
        f"{_against_defaults(report, 'recipe-fp32')}; {_against_defaults(report, 'ddpm')}. diffkit at "
        f"{b:g} s reaches the best peer at {b3:g} s (a third of its compute): pixels "
        f"{_yes(reaches['pixels'])}, Inception {_yes(reaches['inception'])}. {verdict(report)}. Cells: "
        "median over seeds (min-max); training PFLOP: three times the network's forward FLOPs per image "
        "times the images seen (the networks are matched in parameters, not in FLOPs)."
    )
    return "\n\n".join([setup, contenders, goals])


def _variants(report: dict[str, Any]) -> list[Any]:
    """The variants of a lever run, its baseline first."""
    baseline = _baseline(report)
    return sorted(dict.fromkeys(r["variant"] for r in report["data"]["rows"]), key=lambda n: n != baseline)


def levers_headline(report: dict[str, Any]) -> str:
    s, rows = report["summary"], report["data"]["rows"]
    budgets = trained_budgets(report)

    def fd(name: str) -> str:
        return " / ".join(f"{_row(rows, 'variant', name, b)['fd_pixels']:.3g}" for b in budgets)

    cells = "; ".join(f"{name} {fd(name)}" for name in _variants(report))
    seconds = " / ".join(f"{b:g} s" for b in budgets)
    # a lever changes one thing; a sweep's setting is a point of its grid (several knobs at once)
    each = "each setting against" if s.get("mode") == "peer_sweep" else "one change each from"
    seeds = f"{count(s['seeds'])} seed{'s' if len(s['seeds']) > 1 else ''}"
    return (
        f"{each} `{_baseline(report)}`, {seconds} of training, {seeds}; FD on 8x8 pixels "
        f"(floor {s['floor_fd_pixels']:.2g}): {cells}"
    )


def trained_budgets(report: dict[str, Any]) -> list[float]:
    """The budgets a report's jobs trained for, shortest first (B and 3B; a one-budget sweep: B)."""
    return sorted({row["budget_s"] for row in report["data"]["rows"]})


def levers_block(report: dict[str, Any], against: tuple[str, str] | None = None) -> str:
    """The lever (or peer sweep) table; ``against`` = (variant, other) adds one line: variant's distance to
    the floor over other's, per space and budget (e.g. today's defaults against the issue-time ones)."""
    s, rows = report["summary"], report["data"]["rows"]
    budgets = trained_budgets(report)
    baseline = _baseline(report)
    seconds = " and ".join(f"{b:g} s" for b in budgets)
    # reports from before the peer protocol's measured budgets ran step counts planned from pilot steps
    planned = "" if "budget_clock" in s else ", step counts planned from pilot steps"
    used = f" (jobs trained {s['budget_used_min']:.2f}-{s['budget_used_max']:.2f}x their budget{planned})"
    setup = (
        f"Setup: {s['n_train']:,} procedural {s['resolution']} px faces, baseline `{baseline}`, "
        f"{'budgets' if len(budgets) > 1 else 'budget'} {seconds}{used}, seeds "
        f"{', '.join(str(x) for x in s['seeds'])}, {s['n_samples']} DDIM-50 "
        f"samples per job, {s['workers']} jobs at a time (1 thread each); floor: pixels "
        f"{s['floor_fd_pixels']:.2f}, Inception {s['floor_fd_inception']:.1f}; "
        f"report created {report['created']}."
    )

    def cell(name: str, budget: float, key: str) -> str:
        r = _row(rows, "variant", name, budget)
        spread = f"{r[f'{key}_min']:.3g}-{r[f'{key}_max']:.3g}"
        ratio = gap_ratio(report, name, budget, key.removeprefix("fd_"), baseline)
        # one seed has no spread to show
        return f"{r[key]:.3g} ({spread}; {ratio:.2f})" if r["seeds"] > 1 else f"{r[key]:.3g} ({ratio:.2f})"

    keys = ("fd_pixels", "fd_inception")
    labels = {"fd_pixels": "pixel FD", "fd_inception": "Inception FD"}
    levers = table(
        ["variant", *(f"{labels[key]}, {b:g} s" for key in keys for b in budgets)],
        [[f"`{n}`", *(cell(n, b, key) for key in keys for b in budgets)] for n in _variants(report)],
    )
    many = len(s["seeds"]) > 1
    note = (
        f"Each cell: {'median FD over seeds (min-max; ' if many else 'FD of the one seed ('}the distance to "
        f"the floor relative to `{baseline}`'s in the same run, below 1 is better)."
    )
    blocks = [setup, levers, note]
    if against is not None:
        variant, other = against
        ratios = {
            space: " / ".join(f"{gap_ratio(report, variant, budget, space, other):.2f}" for budget in budgets)
            for space in ("pixels", "inception")
        }
        at = " / ".join(f"{b:g} s" for b in budgets)
        blocks.append(
            f"`{variant}`'s distance to the floor over `{other}`'s, at {at}: "
            f"pixels {ratios['pixels']}, Inception {ratios['inception']}."
        )
    return "\n\n".join(blocks)


# ------------------------------------------------------------------------------ figures in the prose


def _job(report: dict[str, Any], variant: str) -> dict[str, Any]:
    """The first job of a variant (the network is the same in all of its jobs)."""
    return next(job for job in report["data"]["jobs"] if job["spec"]["variant"] == variant)


def prose(report: dict[str, Any]) -> dict[str, str]:
    """The comparison's figures that docs/benchmarks.md quotes in its prose: per space, diffkit at B against
    the best peer row at 3B: its distance to the floor per space, and the training FLOPs each spent (against
    the pixel space's best row)."""
    s, rows = report["summary"], report["data"]["rows"]
    diffkit = _row(rows, "contender", "diffkit", s["budget_s"])
    figures = {"n_train": f"{s['n_train']:,}"}
    for space in SPACE_NAMES:
        best = _row(rows, "contender", s[f"best_peer_{space}_3B"], s["budget_3x_s"])
        gap = f"gap_fd_{space}"
        figures[f"b_over_best_3B_{space}"] = f"{diffkit[gap] / best[gap]:.2f}"
        if space == "pixels":
            flops = diffkit["train_pflops_median"] / best["train_pflops_median"]
            figures["pflops_b_over_best_3B_pixels"] = f"{flops:.2f}"
    return figures


def levers_2_prose(report: dict[str, Any]) -> dict[str, str]:
    """The second lever run's figures in the prose: the defaults' seed spread, width against depth, the
    post-hoc EMA run's training seconds."""
    s, rows = report["summary"], report["data"]["rows"]
    figures = {"budget_B": f"{s['budget_s']:g}", "budget_3B": f"{s['budget_3x_s']:g}"}
    for tag, budget in (("B", s["budget_s"]), ("3B", s["budget_3x_s"])):
        defaults, wide = _row(rows, "variant", "defaults", budget), _row(rows, "variant", "width_40", budget)
        figures |= {
            f"defaults_pixels_min_{tag}": f"{defaults['fd_pixels_min']:.2f}",
            f"defaults_pixels_max_{tag}": f"{defaults['fd_pixels_max']:.2f}",
            f"defaults_inception_{tag}": f"{defaults['fd_inception']:.3g}",
            f"width_40_inception_{tag}": f"{wide['fd_inception']:.3g}",
            f"width_40_gap_pixels_{tag}": f"{gap_ratio(report, 'width_40', budget, 'pixels'):.2f}",
            f"phema_train_s_{tag}": f"{_row(rows, 'variant', 'phema', budget)['train_seconds_median']:.0f}",
        }
    for variant in ("depth_2", "width_40"):
        result = _job(report, variant)["result"]
        figures[f"{variant}_params_m"] = f"{result['params'] / 1e6:.2f}"
        figures[f"{variant}_gflops"] = f"{result['flops_forward_per_image'] / 1e9:.2f}"
    return figures


def levers_3_prose(report: dict[str, Any]) -> dict[str, str]:
    """The third lever run's figure in the prose: batch 32's optimiser steps over batch 64's."""
    s, rows = report["summary"], report["data"]["rows"]
    figures = {}
    for tag, budget in (("B", s["budget_s"]), ("3B", s["budget_3x_s"])):
        batch_32, defaults = (_row(rows, "variant", name, budget) for name in ("batch_32", "defaults"))
        figures[f"batch_32_steps_ratio_{tag}"] = f"{batch_32['steps_median'] / defaults['steps_median']:.1f}"
    return figures


def small_aligned_prose(report: dict[str, Any]) -> dict[str, str]:
    """The aligned ``small`` against its old shape: seed ranges at 3B and steps at both budgets."""
    s, rows = report["summary"], report["data"]["rows"]
    figures = {"budget_B": f"{s['budget_s']:g}", "budget_3B": f"{s['budget_3x_s']:g}"}
    for name in ("preset_small", "small_unaligned"):
        long = _row(rows, "variant", name, s["budget_3x_s"])
        figures |= {
            f"{name}_pixels_min_3B": f"{long['fd_pixels_min']:.2f}",
            f"{name}_pixels_max_3B": f"{long['fd_pixels_max']:.2f}",
            f"{name}_inception_min_3B": f"{long['fd_inception_min']:.0f}",
            f"{name}_inception_max_3B": f"{long['fd_inception_max']:.0f}",
        }
        for tag, budget in (("B", s["budget_s"]), ("3B", s["budget_3x_s"])):
            figures[f"{name}_steps_{tag}"] = f"{_row(rows, 'variant', name, budget)['steps_median']:g}"
    aligned, unaligned = (
        _row(rows, "variant", name, s["budget_3x_s"]) for name in ("preset_small", "small_unaligned")
    )
    figures["steps_ratio_3B"] = f"{aligned['steps_median'] / unaligned['steps_median']:.2f}"
    return figures
