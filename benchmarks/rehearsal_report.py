"""The rehearsal's report: per-stage costs, the curves that show whether anything slows down with size,
the final grid, FID over training, and a GPU projection from the FLOP counts (labelled as one).

Built from ``WORK/stages.json`` and the files the stages left (``benchmarks/rehearsal.py``), so it can be
rebuilt (``--report-only``) without rerunning hours of work.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffkit.report.model import Report, ReportImage, ReportPaths, Section
from diffkit.report.plots import line_plot
from diffkit.report.render import write_report

if TYPE_CHECKING:
    from benchmarks.rehearsal import Plan, Rehearsal

# Peak dense tensor throughput at bf16 with fp32 accumulation (what autocast uses), from the vendor's
# data sheets: RTX 3060 (GA106, 28 SMs at 1.78 GHz: half the fp16-accumulate rate on GeForce cards) and
# H100 SXM5.
GPUS = {"RTX 3060 (bf16 dense)": 25.5e12, "H100 SXM (bf16 dense)": 989.4e12}
MFU_ASSUMED = (0.15, 0.30, 0.45)  # model FLOP utilisation: an assumption, shown as a range
REFERENCE_PROJECT = {
    "images": 50 * 30_000,
    "hours": (6.0, 7.0),
    "gpu": "RTX 3060",
    "text": "50 epochs of 30k scraped faces in 6-7 h on an RTX 3060",
}
# Slowdown windows: the first and last fifth of a stage's progress.
WINDOW = 0.2


def rate_early_late(points: list[tuple[float, float]]) -> dict[str, float | None]:
    """Progress per second over the first and the last WINDOW of the progress, and their ratio
    (late / early: below 1 means the stage slowed down as it grew)."""
    points = [(t, p) for t, p in points if p is not None]
    if len(points) < 4 or points[-1][1] <= points[0][1]:
        return {"early": None, "late": None, "late_over_early": None}
    lo, hi = points[0][1], points[-1][1]
    span = hi - lo

    def rate(start: float, stop: float) -> float | None:
        inside = [(t, p) for t, p in points if start <= p <= stop]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    early, late = rate(lo, lo + WINDOW * span), rate(hi - WINDOW * span, hi)
    ratio = None if not early or late is None else round(late / early, 3)
    return {
        "early": None if early is None else round(early, 3),
        "late": None if late is None else round(late, 3),
        "late_over_early": ratio,
    }


def curve_points(record: dict[str, Any], key: str) -> list[tuple[float, float]]:
    return [(point["t_s"], point[key]) for point in record["curve"] if point.get(key) is not None]


def cpu_points(record: dict[str, Any]) -> list[tuple[float, float]]:
    """(CPU seconds of the command, progress): progress per CPU second does not move with the load."""
    return [
        (point["cpu_s"], point["progress"])
        for point in record["curve"]
        if point.get("cpu_s") is not None and point.get("progress") is not None
    ]


def cpu_ms_by_tenth(record: dict[str, Any]) -> list[tuple[float, float | None]]:
    """(kept images at the tenth's end, CPU ms per kept image within it) for each tenth of the progress:
    a cost that grows with the folder shows as a rising column."""
    points = cpu_points(record)
    if len(points) < 2:
        return []
    total = points[-1][1]
    out: list[tuple[float, float | None]] = []
    previous = points[0]
    for k in range(1, 11):
        mark = next((point for point in points if point[1] >= total * k / 10), points[-1])
        done = mark[1] - previous[1]
        out.append((mark[1], round(1000 * (mark[0] - previous[0]) / done, 2) if done > 0 else None))
        previous = mark
    return out


def earlier_scrape_section(scrape: dict[str, Any]) -> tuple[Section, dict[str, Any]]:
    """The scrape of an earlier rehearsal (``--earlier-scrape``) beside this one: CPU per kept image per
    tenth of the progress, both runs, and the late / early rate of each."""
    earlier = scrape["earlier"]
    before, after = cpu_ms_by_tenth(earlier), cpu_ms_by_tenth(scrape)
    rows = [
        {
            "tenth": k + 1,
            "kept (earlier)": int(b[0]),
            "CPU ms / kept (earlier)": b[1],
            "kept (this run)": int(a[0]),
            "CPU ms / kept (this run)": a[1],
        }
        for k, (b, a) in enumerate(zip(before, after, strict=False))
    ]
    earlier_rate = rate_early_late(cpu_points(earlier))
    summary = {
        "scrape_earlier_commit": str(earlier["commit"])[:10],
        "scrape_earlier_mean_load1": earlier["mean_load1"],
        "scrape_earlier_cpu_ms_per_kept": round(1000 * earlier["cpu_s"] / max(1, earlier["kept"]), 2),
        "scrape_earlier_cpu_rate_late_over_early": earlier_rate["late_over_early"],
    }
    text = (
        f"The same scrape (same plan, same site) at commit {summary['scrape_earlier_commit']}, before the "
        "inline near-duplicate check bounded its candidates (diffkit/scrape/kept.py), beside this run. "
        "Every new image is checked against every kept image within the hash threshold; aligned faces "
        "give more of those the more are kept, so the check's cost grew with the folder. Columns: CPU "
        "milliseconds of the scrape command per kept image within each tenth of the progress."
    )
    figure = line_plot(
        {
            "earlier": ([b[0] for b in before], [b[1] for b in before]),
            "this run": ([a[0] for a in after], [a[1] for a in after]),
        },
        "kept images",
        "CPU ms per kept image",
        "Scrape cost per image as the folder grows",
    )
    return Section(
        heading="Scrape: a slowdown with size, before and after its fix", table=rows, text=text, figure=figure
    ), summary


def mean_load(record: dict[str, Any]) -> float | None:
    loads = [point["load1"] for point in record["curve"] if point.get("load1") is not None]
    return round(statistics.fmean(loads), 2) if loads else None


def read_stats(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's step records and its FID-while-training records (stats.jsonl)."""
    steps, evals = [], []
    for line in (run_dir / "stats.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "eval":
            evals.append(record)
        elif "kind" not in record:
            steps.append(record)
    return steps, evals


def train_rates(steps: list[dict[str, Any]]) -> dict[str, float | None]:
    """Training images per second over the first and the last WINDOW of the run's logged steps."""
    rates = [record["img_per_s"] for record in steps if record.get("img_per_s")]
    if len(rates) < 5:
        return {"early": None, "late": None, "late_over_early": None}
    k = max(1, round(len(rates) * WINDOW))
    early, late = statistics.median(rates[1 : k + 1]), statistics.median(rates[-k:])
    return {"early": round(early, 2), "late": round(late, 2), "late_over_early": round(late / early, 3)}


def projection(train_flops_per_image: float, cpu_img_per_s: float) -> tuple[list[dict[str, Any]], str]:
    images = REFERENCE_PROJECT["images"]
    rows = [
        {
            "hardware": "this CPU (measured, not projected)",
            "assumed MFU": "-",
            "img/s": round(cpu_img_per_s, 1),
            f"hours for {images:,} images": round(images / cpu_img_per_s / 3600, 1),
        }
    ]
    for name, peak in GPUS.items():
        for mfu in MFU_ASSUMED:
            rate = peak * mfu / train_flops_per_image
            rows.append(
                {
                    "hardware": f"{name}, projection",
                    "assumed MFU": f"{mfu:.0%}",
                    "img/s": round(rate, 1),
                    f"hours for {images:,} images": round(images / rate / 3600, 2),
                }
            )
    text = (
        f"A PROJECTION, not a measurement: hours for the reference project's {images:,} training images "
        f"({REFERENCE_PROJECT['text']}) with diffkit's small preset at 64 px, from the FLOPs diffkit counts "
        f"({train_flops_per_image / 1e9:.1f} GFLOPs per training image: 3x the forward pass) and each GPU's "
        "peak dense bf16 rate at an assumed model FLOP utilisation (MFU; small convolutional U-Nets at 64 px "
        "rarely exceed 45% and often sit near 15%). Equal images are assumed to give equal quality: the "
        "reference project's network is not diffkit's, and the quality benchmark's per-compute ratio against "
        "the diffusers recipe (reports/bench_quality.json) is not used here because its peers are being "
        "re-tuned (issue 23); with it, diffkit would need fewer images."
    )
    return rows, text


def write_rehearsal_report(plan: Plan, rehearsal: Rehearsal, report_dir: Path) -> ReportPaths:
    records = rehearsal.records
    scrape, cold, warm = records["scrape"], records["dedupe_cold"], records["dedupe_warm"]
    killed, resumed, sample, evaluation = (
        records[name] for name in ("train_killed", "train_resume", "sample", "eval")
    )
    steps, evals = read_stats(rehearsal.run_dir)
    train_result, scrape_result = resumed["result"], scrape["result"]
    train_flops = 3 * train_result["flops_per_image"]
    trained_s = sum(r["train_seconds"] for r in steps[-1:]) if steps else 0.0
    cpu_img_per_s = steps[-1]["kimg"] * 1000 / trained_s if steps and trained_s else 0.0
    scrape_rate = rate_early_late(curve_points(scrape, "progress"))
    scrape_cpu_rate = rate_early_late(cpu_points(scrape))
    sample_rate = rate_early_late(curve_points(sample, "progress"))
    train_rate = train_rates(steps)
    eval_result = evaluation["result"]
    stage_rows = [
        {
            "stage": name,
            "wall_s": records[name]["wall_s"],
            "cpu_s": records[name]["cpu_s"],
            "peak_rss_mb": records[name]["peak_rss_mb"],
            "disk_mb": records[name]["disk_mb"],
            "files": records[name]["files"],
            "mean_load1": mean_load(records[name]),
            "commit": records[name]["commit"][:10],
        }
        for name in records
    ]
    summary: dict[str, Any] = {
        "n_target": plan.n,
        "image_px": plan.image_size,
        "kept": scrape_result["kept_total"],
        "scrape_requests": scrape_result["requests"],
        "scrape_wall_s": scrape["wall_s"],
        "scrape_cpu_s": scrape["cpu_s"],
        "site_cpu_s": scrape["site_cpu_s"],
        "scrape_kept_per_s": round(scrape_result["kept_total"] / scrape["wall_s"], 2),
        "scrape_cpu_ms_per_kept": round(1000 * scrape["cpu_s"] / max(1, scrape_result["kept_total"]), 2),
        "scrape_rate_late_over_early": scrape_rate["late_over_early"],
        "scrape_cpu_rate_late_over_early": scrape_cpu_rate["late_over_early"],
        "scrape_disk_mb": scrape["disk_mb"],
        "scrape_files": scrape["files"],
        "dedupe_cold_s": cold["wall_s"],
        "dedupe_warm_s": warm["wall_s"],
        "dedupe_warm_hashed": warm["result"]["n_hashed"],
        "dedupe_warm_from_scrape": warm["result"]["n_from_scrape"],
        "dedupe_same_clusters": warm["same_clusters_as_cold"],
        "dedupe_clusters": warm["result"]["n_clusters"],
        "dedupe_warm_goal_s": 10.0,
        "train_preset": plan.preset,
        "train_px": plan.resolution,
        "train_minutes_budget": plan.train_minutes,
        "cache_build_s": killed["cache_build_s"],
        "setup_s": killed["setup_s"],
        "eval_reference": plan.eval_reference,
        "state_step": killed["state_step"],
        "killed_after_training_s": killed["killed_after_training_s"],
        "kimg_at_kill": killed["kimg_at_kill"],
        "resumed_from_step": train_result["resumed_from_step"],
        "state_written_after_training_s": killed["state_written_after_training_s"],
        "lost_to_kill_s": round(
            killed["killed_after_training_s"] - killed["state_written_after_training_s"], 1
        ),
        "resume_max_minutes": resumed["max_minutes_given"],
        "final_step": train_result["step"],
        "final_kimg": round(train_result["kimg"], 3),
        "train_img_per_s_early": train_rate["early"],
        "train_img_per_s_late": train_rate["late"],
        "train_rate_late_over_early": train_rate["late_over_early"],
        "train_gflops_per_image": round(train_flops / 1e9, 2),
        "params": train_result["params"],
        "evals_while_training": len(evals),
        "fid_first": evals[0]["fid"] if evals else None,
        "fid_last": evals[-1]["fid"] if evals else None,
        "run_disk_mb": resumed["disk_mb"],
        "run_files": resumed["files"],
        "sample_n": plan.sample_n,
        "sample_wall_s": sample["wall_s"],
        "sample_img_per_s": round(plan.sample_n / sample["wall_s"], 2),
        "sample_rate_late_over_early": sample_rate["late_over_early"],
        "eval_wall_s": evaluation["wall_s"],
        "eval_n": plan.eval_n,
        "fid": eval_result.get("fid"),
        "kid": eval_result.get("kid_mean"),
        "inception_score": eval_result.get("is_mean"),
        "fid_headline": eval_result.get("fid_headline"),
        "total_wall_s": round(sum(r["wall_s"] for r in records.values()), 1),
        "total_cpu_s": round(sum(r["cpu_s"] for r in records.values()), 1),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in records.values()),
        "cores": os.cpu_count(),
    }
    if "earlier" in scrape:
        earlier_section, earlier_summary = earlier_scrape_section(scrape)
        summary.update(earlier_summary)
    rows, projection_text = projection(train_flops, cpu_img_per_s)
    sections = [
        Section(heading="What ran", text=settings_text(plan)),
        Section(
            heading="Per stage",
            table=stage_rows,
            text=(
                "Wall and CPU seconds, peak resident memory of the command (its reaped children included), "
                "the disk its output takes and its file count, and the mean 1-minute load average while it "
                "ran (the machine's 2 cores were shared with other work: a load above 2 means the stage "
                "waited for a core)."
            ),
        ),
        Section(
            heading="Does anything slow down with size?",
            table=[
                {"stage": "scrape (kept images / s)", **scrape_rate},
                {"stage": "scrape (kept images / CPU s of the client)", **scrape_cpu_rate},
                {"stage": "train (images / s, from stats.jsonl)", **train_rate},
                {"stage": "sample (images / s)", **sample_rate},
            ],
            text=(
                f"Each rate over the first and the last {WINDOW:.0%} of the stage's progress; late / early "
                "below 1 is a slowdown. Per CPU second is the reading the machine's load does not move."
            ),
            figure=line_plot(
                {
                    "scrape: kept images": (
                        [t / 60 for t, _ in curve_points(scrape, "progress")],
                        [p for _, p in curve_points(scrape, "progress")],
                    )
                },
                "minutes",
                "kept images",
                "Scrape progress",
            ),
        ),
        Section(heading="Training", figure=training_figure(killed, resumed), text=training_text(summary)),
        Section(
            heading="The same evaluations before the kill and after the resume",
            table=redone_evaluations(killed, evals),
            text="Evaluations the killed session had printed, beside the resumed run's at the same kimg "
            "(the work past the last saved state was redone): equal values mean the resume retrained the "
            "same weights.",
        ),
        Section(
            heading="FID over training (stand-in Inception weights)",
            figure=fid_figure(evals),
            text=(
                f"{len(evals)} evaluations while training: FID of {plan.eval_samples} EMA samples against "
                "the training data, with generated stand-in InceptionV3 weights (the official file cannot "
                "be downloaded here): the curve's shape and cost are real, its values do not compare with "
                "published FIDs."
            ),
        ),
        Section(heading="GPU projection (a projection, not a measurement)", table=rows, text=projection_text),
    ]
    again = [
        {
            "stage": name,
            "first wall_s": r["first_run"]["wall_s"],
            "first cpu_s": r["first_run"]["cpu_s"],
            "first mean_load1": r["first_run"]["mean_load1"],
            "again wall_s": r["wall_s"],
            "again cpu_s": r["cpu_s"],
            "again mean_load1": mean_load(r),
        }
        for name, r in records.items()
        if "first_run" in r
    ]
    if again:
        sections.insert(
            2,
            Section(
                heading="Measured again",
                table=again,
                text=(
                    "These stages' inputs were still there after the pipeline, so they were run "
                    "again (--redo) at the commit shown in the per-stage table: a later one when a fix "
                    "landed after the first measurement, or the same one on a quieter machine. The "
                    "per-stage table above shows the second measurement; the first is kept here."
                ),
            ),
        )
    if "earlier" in scrape:
        sections.insert(3, earlier_section)
    grid = rehearsal.samples / "grid.png"
    if grid.exists():
        sections.append(
            Section(
                heading="Final samples",
                images=[
                    ReportImage(
                        grid,
                        caption=(
                            f"{plan.sample_n} samples, {plan.sampler} {plan.sample_steps} steps, EMA weights"
                        ),
                    )
                ],
            )
        )
    report = Report(
        title=f"Rehearsal: the mission at its own size ({plan.n:,} faces of {plan.image_size} px, CPU)",
        command="rehearsal",
        summary=summary,
        headline=(
            f"{summary['kept']:,} faces scraped in {scrape['wall_s'] / 60:.0f} min; dedupe warm "
            f"{warm['wall_s']:.1f} s (cold {cold['wall_s']:.0f} s); {summary['final_kimg']:.1f} kimg of "
            f"training with a kill -9 and resume; {plan.sample_n} samples; FID at N = {plan.eval_n}"
        ),
        sections=sections,
        data={"plan": asdict(plan), "stages": records, "evals": evals},
    )
    return write_report(report, report_dir / "rehearsal.html")


def settings_text(plan: Plan) -> str:
    return (
        f"The local fake-face site serving {plan.image_size} px JPEGs at quality {plan.jpeg_quality}, with "
        f"{plan.repeat_rate:.0%} exact repeats, {plan.near_dup_rate:.0%} near-copies and faults "
        f"({', '.join(plan.faults)}); diffkit scrape --n {plan.n} --rps {plan.rps:g} --concurrency "
        f"{plan.concurrency}; diffkit dedupe of the images alone (cold: every file decoded) and of the "
        f"scrape folder (warm: the scraper's records); diffkit train --preset {plan.preset} --resolution "
        f"{plan.resolution} --max-minutes {plan.train_minutes:g} --eval-every-kimg {plan.eval_every_kimg:g} "
        f"--eval-samples {plan.eval_samples} --phema-every-kimg {plan.phema_every_kimg:g}, killed with "
        f"SIGKILL {plan.kill_after_minutes:g} minutes into training and resumed with what was left of the "
        f"budget; diffkit sample --n {plan.sample_n} --sampler {plan.sampler} --steps {plan.sample_steps} "
        f"--grid; diffkit eval --samples {plan.eval_n} --reference-samples {plan.eval_n} against the scraped "
        "faces. Every stage is the diffkit command in its own process, as a user runs it."
        + (
            f" The training budget here is {plan.train_minutes:g} minutes, below the mission's 60: the run "
            "had to fit one working session on a shared machine (`--train-minutes`); the default is 60."
            if plan.train_minutes < 60
            else ""
        )
        + f" FID while training is measured against {plan.eval_reference:,} training images"
        " (--eval-reference)."
    )


def redone_evaluations(killed: dict[str, Any], evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The FIDs the killed session printed beside the resumed run's at the same kimg: a resume that
    continues bit-exactly trains the same weights, so the same fixed-noise samples score the same."""
    after = {round(e["kimg"], 2): e["fid"] for e in evals}
    rows = []
    for line in killed.get("stderr_tail", "").splitlines():
        match = re.match(r"\s*([\d.]+) kimg: FID@\d+ ([\d,.]+)", line)
        if match and round(float(match[1]), 2) in after:
            before = float(match[2].replace(",", ""))
            rows.append(
                {
                    "kimg": float(match[1]),
                    "FID before the kill (printed)": before,
                    "FID after the resume": round(after[round(float(match[1]), 2)], 1),
                }
            )
    return rows


def training_text(summary: dict[str, Any]) -> str:
    return (
        f"The data cache was ready after {summary['cache_build_s']:.0f} s and the first step came after "
        f"{summary['setup_s']:.0f} s (the FID reference: {summary['eval_reference']:,} training images "
        "through Inception). The run was killed "
        f"{summary['killed_after_training_s']:.0f} s into training at {summary['kimg_at_kill']} kimg; its "
        f"last state (step {summary['state_step']}) had been written "
        f"{summary['state_written_after_training_s']:.0f} s in (the state is "
        f"refreshed every 10 minutes), so {summary['lost_to_kill_s']:.0f} s of training were redone. The "
        f"resume continued from step {summary['resumed_from_step']} with --max-minutes "
        f"{summary['resume_max_minutes']}, to {summary['final_kimg']} kimg in all."
    )


def training_figure(killed: dict[str, Any], resumed: dict[str, Any]) -> Any:
    offset = killed["wall_s"] / 60
    first = curve_points(killed, "progress")
    second = curve_points(resumed, "progress")
    return line_plot(
        {
            "before the kill": ([t / 60 for t, _ in first], [p for _, p in first]),
            "after the resume": ([offset + t / 60 for t, _ in second], [p for _, p in second]),
        },
        "minutes since the train command started",
        "kimg",
        "Training progress (kill -9, then --resume)",
    )


def fid_figure(evals: list[dict[str, Any]]) -> Any:
    if not evals:
        return None
    return line_plot(
        {"FID": ([e["kimg"] for e in evals], [e["fid"] for e in evals])},
        "kimg",
        "FID (stand-in)",
        "FID while training",
    )
