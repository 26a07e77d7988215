"""``diffkit demo``: the whole pipeline, end to end, against the local fake-face site.

scrape (with repeats, near-duplicates and faults switched on) -> dedupe -> train the tiny preset (with
FID/KID halfway and at the end) -> sample a grid -> eval. It needs no internet except for the Inception
weights of the FID/KID steps, which are skipped with their reason when they cannot be had. Rerunning
the same command resumes: the scrape fetches only what is missing and training continues from
``state-latest.pt``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffkit.console import CommandResult, err_console, shown
from diffkit.errors import DiffkitError
from diffkit.train.config import TrainConfig  # light: the CLI imports it for its defaults too

# Rare enough that the scrape keeps going, frequent enough that the report shows every kind of rejection.
DEMO_FAULTS = {"http_503": 0.03, "truncated": 0.02, "not_image": 0.02, "bad_length": 0.02}
# The stages in the order they run: the demo says which one it is in and where the time went.
STAGES = ("scrape", "dedupe", "train", "sample", "eval")


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("demo")
    n_images: int = 300
    site_image_size: int = 256
    resolution: int = 32
    train_steps: int = 300
    batch_size: int = 32
    eval_samples: int = 100
    weights: Path | None = None
    device: str = "auto"
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.n_images < 16:
            raise DiffkitError(f"--n must be at least 16 for a meaningful demo, got {self.n_images}")
        if self.train_steps < 1 or self.eval_samples < 2:
            raise DiffkitError("--steps must be >= 1 and --eval-samples >= 2")
        if self.eval_samples > self.n_images:
            raise DiffkitError(
                f"--eval-samples ({self.eval_samples}) cannot exceed the reference set (--n {self.n_images})"
            )


@dataclass
class DemoResult(CommandResult):
    out: Path
    seconds: dict[str, float] = field(default_factory=dict)
    steps: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    timeline: list[str] = field(default_factory=list)  # the stage lines printed while it ran
    index: Path | None = None
    run_page: Path | None = None  # the one page of this demo's run: every stage summarised and linked
    fid: str | None = None  # the FID line with its N, reference N, engine and weights' status
    train_fid: str | None = None  # the same line for the last FID measured during training

    def report_paths(self) -> list[Path]:
        pages = [path for path in (self.run_page, self.index) if path is not None]
        return pages + [Path(path) for path in self.reports.values()]

    def summary_lines(self) -> list[str]:
        lines = [f"[bold]diffkit demo[/] in {shown(self.out)}"]
        for name, seconds in self.seconds.items():
            lines.append(f"  {name:<7} {seconds:7.1f} s  {shown(self.steps.get(name, ''))}")
        for name, reason in self.skipped.items():
            lines.append(f"  [yellow]{name} skipped[/]: {shown(reason)}")
        if self.index is not None:
            lines.append(f"all reports: {shown(self.index)}")
        if self.run_page is not None:
            lines.append(f"[bold]the run, every stage on one page:[/] {shown(self.run_page)}")
        return lines


def _report_path(result: CommandResult) -> str | None:
    paths = result.report_paths()  # the HTML report first
    return str(paths[0]) if paths else None


def _stop_if_interrupted(step_result: CommandResult) -> None:
    """A step that caught Ctrl-C has saved its state; the demo stops there (rerun to resume)."""
    if step_result.interrupted:
        raise KeyboardInterrupt


@contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """``name`` set to ``value`` inside the block (unchanged when ``value`` is None), as before after it."""
    before = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def _train_config(config: DemoConfig, data_dir: Path, run_dir: Path, resume: bool) -> TrainConfig:
    """The demo's training: the tiny preset, two grids and two FID/KID points on the way."""
    train_kimg = config.train_steps * config.batch_size / 1000
    return TrainConfig(
        data=data_dir,
        out=run_dir,
        preset="tiny",
        resolution=config.resolution,
        batch_size=config.batch_size,
        steps=config.train_steps,
        # Two grids during the run and one at its end: the progression image shows learning
        # without the grids costing more than the training itself on a CPU.
        sample_every_kimg=train_kimg / 3,
        sample_grid=16,
        sample_steps=25,
        # FID/KID halfway and at the end, at the eval step's N against the same reference, so the
        # numbers line up with the eval's (they differ by sampler, steps and noise). The training
        # data's features extracted here are what the eval step then finds in the feature cache.
        eval_every_kimg=train_kimg / 2,
        eval_samples=config.eval_samples,
        seed=config.seed,
        device=config.device,
        resume=resume,
        progress=config.progress,
    )


def run_demo(config: DemoConfig) -> DemoResult:
    result = DemoResult(out=config.out)
    data_dir, run_dir = config.out / "data", config.out / "run"

    started = time.perf_counter()

    def say(line: str) -> None:
        # On stderr, so `--json` on stdout stays one object; each stage's own bar follows its line.
        result.timeline.append(line)
        err_console.print(f"[bold]demo[/] {shown(line)}", highlight=False)

    def timed(name: str, call: Any) -> Any:
        number = f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}"
        say(f"{number}: started")
        start = time.perf_counter()
        value = call()
        result.seconds[name] = time.perf_counter() - start
        total = time.perf_counter() - started
        say(f"{number}: {result.seconds[name]:.1f} s (demo so far {total:.1f} s)")
        if (path := _report_path(value)) is not None:
            result.reports[name] = path
        return value

    # The commands are imported here, not at the top: the CLI imports this module for DemoConfig's
    # defaults, and every ``diffkit`` start (``--help``, TAB completion) would otherwise load torch.
    from diffkit.dedupe.config import DedupeConfig
    from diffkit.dedupe.run import dedupe
    from diffkit.eval.config import EvalConfig
    from diffkit.eval.run import evaluate
    from diffkit.fakesite.site import FaceSite, SiteConfig
    from diffkit.metrics.weights import INCEPTION_ENV
    from diffkit.report.index import IndexConfig, build_index
    from diffkit.runs.folder import STATE_FILE, STATS_FILE, eval_records, read_stats
    from diffkit.sample.config import SampleConfig
    from diffkit.sample.run import sample
    from diffkit.scrape.config import ScrapeConfig
    from diffkit.scrape.run import scrape
    from diffkit.train.run import train

    site_config = SiteConfig(
        seed=config.seed,
        size=config.site_image_size,
        repeat_rate=0.05,
        near_dup_rate=0.05,
        faults=DEMO_FAULTS,
    )
    with FaceSite(site_config) as site:
        scraped = timed(
            "scrape",
            lambda: scrape(
                ScrapeConfig(
                    n=config.n_images,
                    out=data_dir,
                    url=site.url,
                    rps=100.0,  # our own local site: no politeness needed
                    concurrency=4,
                    backoff_base_s=0.05,
                    backoff_cap_s=0.5,
                    seed=config.seed,
                    progress=config.progress,
                )
            ),
        )
    _stop_if_interrupted(scraped)
    result.steps["scrape"] = f"{scraped.kept} images kept"

    deduped = timed("dedupe", lambda: dedupe(DedupeConfig(directory=data_dir, progress=config.progress)))
    result.steps["dedupe"] = f"{len(deduped.clusters)} duplicate clusters left (report only)"

    train_config = _train_config(config, data_dir, run_dir, resume=(run_dir / STATE_FILE).exists())
    # Training has no --weights: it finds Inception as `diffkit eval` does without one (environment,
    # cache, download), so the demo's --weights reach it through the environment.
    weights = None if config.weights is None else str(config.weights)
    with _environment(INCEPTION_ENV, weights):
        trained = timed("train", lambda: train(train_config))
    _stop_if_interrupted(trained)
    loss = "n/a" if trained.final_loss is None else f"{trained.final_loss:.4f}"
    result.steps["train"] = f"tiny preset at {config.resolution} px, final loss {loss}"
    evals = eval_records(read_stats(run_dir / STATS_FILE))
    if evals:
        result.train_fid = evals[-1]["headline"]
        result.steps["train"] += f"; during training {result.train_fid}"

    sampled = timed(
        "sample",
        lambda: sample(
            SampleConfig(
                run=run_dir, n=64, steps=25, grid=True, device=config.device, progress=config.progress
            )
        ),
    )
    result.steps["sample"] = f"grid at {sampled.grid}"

    try:
        evaluated = timed(
            "eval",
            lambda: evaluate(
                EvalConfig(
                    run=run_dir,
                    samples=config.eval_samples,
                    metrics=("fid", "kid"),
                    weights=config.weights,
                    device=config.device,
                    progress=config.progress,
                )
            ),
        )
        result.fid = evaluated.fid_headline()
        result.steps["eval"] = result.fid
    except DiffkitError as exc:  # offline without Inception weights: the rest of the demo still stands
        result.skipped["eval"] = str(exc)

    index = build_index(IndexConfig())
    result.index, result.run_page = index.index, index.page_for_run(run_dir)
    return result
