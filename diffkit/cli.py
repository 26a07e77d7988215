"""The ``diffkit`` command line: parse options into a typed config, call one plain function, print.

Every subcommand follows the same shape::

    config = SomeConfig(...)                    # typed, frozen dataclass from the module
    _run(lambda: some_function(config), json_output)

``_run`` turns a :class:`~diffkit.errors.DiffkitError` into one red line and exit code 2, prints the
result as text or as one JSON object (``--json``), and maps Ctrl-C to exit code 130. Logic lives in the
modules, never here.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from diffkit import __version__

try:  # typer >= 0.20 vendors its own copy of click
    from typer._click import exceptions as click_exceptions
    from typer.exceptions import Abort
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions
    from click.exceptions import Abort
from diffkit.clihelp import arrange, panel_of, print_help
from diffkit.configfile import Accepted, file_options
from diffkit.console import err_console, print_result, progress_default, shown
from diffkit.dataset.labels import LabelsMode
from diffkit.dedupe.config import DEFAULT_THRESHOLDS, Action, DedupeConfig, HashKind
from diffkit.demo import DemoConfig
from diffkit.device import PrecisionName
from diffkit.diffusion.guidance import MAX_GUIDANCE
from diffkit.diffusion.names import PredictionName, SamplerName, ScheduleName, TimestepSamplingName
from diffkit.errors import DiffkitError
from diffkit.eval.config import EngineName, EvalConfig
from diffkit.export.config import ExportConfig, ExportFormat
from diffkit.models.config import PresetName
from diffkit.report.index import IndexConfig
from diffkit.runs.folder import RUN_FORMAT
from diffkit.sample.config import DEFAULT_GUIDANCE, GRID_MAX, SampleConfig
from diffkit.scrape.config import ScrapeConfig
from diffkit.train.config import ALWAYS_FROM_REQUEST, DEFAULT_EPOCHS, PRESET_BATCH, PRESET_LR, TrainConfig


def _reflow(help_text: str | None) -> str | None:
    """Join the hard-wrapped lines of each docstring paragraph: the terminal wraps them at its width."""
    if not help_text:
        return help_text
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in paragraph.splitlines()) for paragraph in paragraphs)


def _plain_flags(params: list[Any]) -> None:
    """A flag takes no value: show ``--json``, not ``--json <bool>`` (an empty metavar hides the type)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""


class _Command(TyperCommand):
    """Every subcommand: reflowed docstring help, flags without ``<bool>``, ``DIR`` (not ``{DIR}``),
    ``--config FILE`` where a command takes one, options in help panels (diffkit/clihelp.py)."""

    def __init__(self, *args: Any, help: str | None = None, **kwargs: Any) -> None:  # noqa: A002 (click's name)
        super().__init__(*args, help=_reflow(help), **kwargs)
        if self.name in _FILE_CONFIGS:
            self.params.insert(0, _config_option())
        _plain_flags(self.params)
        arrange(self.name or "", self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _plain_flags([option])
        if option is not None:
            option.rich_help_panel = panel_of(self.name or "", option)
        return option

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if self.rich_markup_mode is None:  # pragma: no cover - the app always sets "rich"
            return super().format_help(ctx, formatter)
        print_help(self, ctx, self.rich_markup_mode)
        return None

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument) and param.required:
                pieces.append(param.display_name_raw + ("..." if param.nargs != 1 else ""))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


# The commands that take --config FILE, each with its config class when a file may also set that class's
# fields that no option reaches (train's weight_decay, hflip...: a run's config.json holds them all, and
# replaying it must not drop one). sample's and eval's option-less fields are test knobs: options only.
_FILE_CONFIGS: dict[str, type | None] = {"train": TrainConfig, "sample": None, "eval": None}
# A run's config.json keys that are that run's own: its folder, and what even --resume takes from the
# command line (resume, the time budgets, TensorBoard, progress...); a replay takes them from its own.
_RUN_ONLY = frozenset({"out", *ALWAYS_FROM_REQUEST})
_FILE_FIELDS = "diffkit.config_file"  # ctx.meta key: what a --config file set (FileOptions)


def _config_option() -> Any:
    """``--config FILE``, built by Typer from a declaration like every other option, then made eager (read
    before the other options, so its values are their defaults) and kept out of the command's arguments."""
    probe = typer.Typer()

    @probe.command()
    def _probe(
        config: Path | None = typer.Option(
            None,
            "--config",
            metavar="FILE",
            help="Read options from a TOML, YAML or JSON file; options given here win. A run's config.json "
            "replays that run.",
        ),
    ) -> None:  # pragma: no cover - never called
        del config

    option = typer.main.get_command(probe).params[0]
    option.is_eager = True
    option.expose_value = False
    option.callback = _read_config_file
    return option


def _accepted(command: Any) -> Accepted:
    """What ``command`` takes from a file: each option under its long name (--batch-size: batch_size,
    --compile: compile, --json: json) and, for train, the config fields no option reaches."""
    options: dict[str, str] = {}
    flags: set[str] = set()
    for param in command.params:
        if param.name in ("config", "help") or not param.expose_value:
            continue
        for key in [opt[2:].replace("-", "_") for opt in param.opts if opt.startswith("--")] or [param.name]:
            options[key] = param.name
        if getattr(param, "is_flag", False):
            flags.add(param.name)
    config_class = _FILE_CONFIGS.get(command.name)
    hints = typing.get_type_hints(config_class) if config_class else {}
    fields = {name: hint for name, hint in hints.items() if name not in options and name != "given"}
    run_only = _RUN_ONLY if command.name == "train" else frozenset()
    return Accepted(command.name, options, frozenset(flags), fields, run_only)


def _read_config_file(ctx: Any, param: Any, value: Path | None) -> None:
    """The file's values become the command's defaults (click's default_map): a typed option still wins,
    and click checks each value as it checks a typed one. Its option-less fields wait in ctx.meta."""
    if value is None or ctx.resilient_parsing:
        return
    try:
        found = file_options(value, _accepted(ctx.command), RUN_FORMAT)
    except DiffkitError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {shown(exc)}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    ctx.default_map = {**(ctx.default_map or {}), **found.defaults}
    ctx.meta[_FILE_FIELDS] = found


def _with_file_fields(ctx: Any, config: Any) -> Any:
    """``config`` with the fields its --config file set that no option reaches. Everything the file set
    counts as given, as a typed option does, so ``--resume`` refuses a value that differs from the run."""
    found = ctx.meta.get(_FILE_FIELDS)
    if found is None:
        return config
    changes = dict(found.fields)
    if hasattr(config, "given"):  # option keys are the config's field names (--compile: compile)
        names = {f.name for f in dataclasses.fields(config)}
        changes["given"] = config.given | (found.keys & names)
    return dataclasses.replace(config, **changes) if changes else config


class _Group(TyperGroup):
    """The ``diffkit`` group itself: its flags (--version, --debug, --help) shown without ``<bool>``."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _plain_flags(params)
        return params


class _App(typer.Typer):
    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _App(
    cls=_Group,
    name="diffkit",
    help="Scrape, de-duplicate, train, sample and evaluate image diffusion models on your own hardware.\n\n"
    "Examples:\n\n"
    "  diffkit demo                   # the pipeline on a local fake-face site\n\n"
    "  diffkit scrape --n 30000       # 30k unique faces into data/faces\n\n"
    "  diffkit train --preset small   # DDPM on data/faces into runs/NNNNN-small\n\n"
    "  diffkit eval --run runs/00000-small --metrics fid,kid",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_state: dict[str, bool] = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"diffkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    _state["debug"] = debug


def _run(call: Callable[[], Any], json_output: bool = False) -> Any:
    """Run one command function with the CLI's error, interrupt and output conventions."""
    try:
        result = call()
    except DiffkitError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {shown(exc)}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    if result is not None:
        print_result(result, json_output)
    return result


JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object instead of text.")
PROGRESS_OPTION = typer.Option(
    None, "--progress/--no-progress", help="Progress bars on stderr (default: on when stderr is a terminal)."
)


def _progress(flag: bool | None) -> bool:
    """``--progress/--no-progress`` as given, else on when stderr is a terminal (also under --json)."""
    return progress_default() if flag is None else flag


def default(config_class: type, name: str) -> Any:
    """A config dataclass field's default: Typer shows it, and it is written only in the config."""
    field = config_class.__dataclass_fields__[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise KeyError(f"{config_class.__name__}.{name} has no default")


# The configs whose defaults the options below show (written only in the configs); the choices are Enums.


@app.command()
def scrape(
    n: int | None = typer.Option(
        None,
        "--n",
        help="Unique, valid images wanted (rerun to resume, raise to extend). Required unless --urls"
        " is given; with --urls it caps the list, which is read whole when it is left out.",
    ),
    out: Path = typer.Option(
        default(ScrapeConfig, "out"), "--out", help="Output folder: images/, manifest, metadata."
    ),
    url: str | None = typer.Option(
        default(ScrapeConfig, "url"),
        "--url",
        help="Image URL, used as is. Not given: probe thispersondoesnotexist.com's endpoints.",
    ),
    urls: Path | None = typer.Option(
        default(ScrapeConfig, "urls"),
        "--urls",
        help="A list of image URLs, each fetched once: text (one per line, # comments), or CSV/Parquet"
        " with a url column (other columns kept in metadata.jsonl). Rate limit and Retry-After per host.",
    ),
    concurrency: int = typer.Option(
        default(ScrapeConfig, "concurrency"), "--concurrency", help="Requests in flight at once."
    ),
    rps: float = typer.Option(
        default(ScrapeConfig, "rps"),
        "--rps",
        help="Most requests per second (all workers together; with --urls, to each host).",
    ),
    timeout: float = typer.Option(
        default(ScrapeConfig, "timeout_s"), "--timeout", help="Seconds allowed for one whole request."
    ),
    max_retries: int = typer.Option(
        default(ScrapeConfig, "max_retries"),
        "--max-retries",
        help="Retries of a request after 429/5xx/timeouts.",
    ),
    user_agent: str = typer.Option(
        default(ScrapeConfig, "user_agent"), "--user-agent", help="User-Agent header (printable ASCII)."
    ),
    expect_size: str | None = typer.Option(
        default(ScrapeConfig, "expect_size"),
        "--expect-size",
        help="Reject images of any other size, e.g. 1024x1024.",
    ),
    threshold: int = typer.Option(
        default(ScrapeConfig, "threshold"),
        "--threshold",
        "-t",
        help="Max pHash Hamming distance (bits of 64) for a near-duplicate candidate (stage 1; a"
        " thumbnail check decides), as dedupe's --threshold.",
    ),
    near_dup_threshold: int | None = typer.Option(
        None, "--near-dup-threshold", hidden=True, help="Deprecated name of --threshold."
    ),
    report_path: Path | None = typer.Option(
        default(ScrapeConfig, "report_path"),
        "--report",
        help="HTML report path, written even when nothing was fetched (not given: "
        "reports/scrape-<time>.html, only when the run fetched or repaired something).",
    ),
    progress: bool | None = PROGRESS_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Collect N unique, valid images from a "random image" URL, politely and resumably.

    Example: diffkit scrape --n 30000 --out data/faces --rps 1
    (or: diffkit scrape --urls list.csv --out data/listed)
    """
    from diffkit.scrape.config import ALL_LISTED, parse_size
    from diffkit.scrape.listrun import scrape_urls
    from diffkit.scrape.run import scrape as run_scrape

    def call() -> Any:
        if n is None and urls is None:
            raise DiffkitError("--n is required (how many images to collect), unless --urls gives a list")
        config = ScrapeConfig(
            n=ALL_LISTED if n is None else n,
            out=out,
            url=url,
            urls=urls,
            concurrency=concurrency,
            rps=rps,
            timeout_s=timeout,
            max_retries=max_retries,
            user_agent=user_agent,
            expect_size=parse_size(expect_size) if expect_size else None,
            threshold=_renamed_threshold(threshold, near_dup_threshold),
            report_path=report_path,
            progress=_progress(progress),
        )
        return scrape_urls(config) if config.urls is not None else run_scrape(config)

    result = _run(call, json_output)
    if result is not None and result.interrupted:
        raise typer.Exit(130)


def _renamed_threshold(threshold: int, old_name_value: int | None) -> int:
    """``scrape --near-dup-threshold`` (0.1) is now ``--threshold``, as in dedupe: the old name works
    for one more release, with a deprecation line on stderr (CHANGELOG.md)."""
    if old_name_value is None:
        return threshold
    err_console.print(
        "[yellow]deprecated:[/] --near-dup-threshold is now --threshold (the same name as dedupe's);"
        " the old name will be removed in the next release",
        highlight=False,
        soft_wrap=True,
    )
    if threshold not in (default(ScrapeConfig, "threshold"), old_name_value):
        raise DiffkitError("--threshold and --near-dup-threshold are the same option: pass only --threshold")
    return old_name_value


@app.command()
def dedupe(
    directory: Path = typer.Argument(
        ..., metavar="DIR", help="Image folder (jpg, jpeg, png, webp), searched recursively."
    ),
    hash_kind: HashKind = typer.Option(default(DedupeConfig, "hash_kind"), "--hash", help="Perceptual hash."),
    threshold: int | None = typer.Option(
        default(DedupeConfig, "threshold"),
        "--threshold",
        "-t",
        help="Max Hamming distance (bits of 64) for a candidate pair (stage 1). Not given, per hash: "
        + ", ".join(f"{kind} {bits}" for kind, bits in DEFAULT_THRESHOLDS.items())
        + " (measured on aligned faces; see the README).",
    ),
    min_similarity: float = typer.Option(
        default(DedupeConfig, "min_similarity"),
        "--min-similarity",
        help="Stage 2: a candidate is a duplicate only if its 16x16 colour thumbnails correlate at least"
        " this much (byte-identical files always are).",
    ),
    verify: bool = typer.Option(
        default(DedupeConfig, "verify"),
        "--verify/--no-verify",
        help="Verify hash candidates by thumbnails, or hash only.",
    ),
    against: Path | None = typer.Option(
        default(DedupeConfig, "against"),
        "--against",
        metavar="REF",
        help="Report DIR's images that duplicate an image of folder REF (uses REF's hash cache).",
    ),
    action: Action = typer.Option(
        default(DedupeConfig, "action"), "--action", help="report (change nothing), move, or delete."
    ),
    to: Path | None = typer.Option(
        default(DedupeConfig, "quarantine"),
        "--to",
        help="Quarantine folder for --action move (not given: DIR-duplicates beside DIR).",
    ),
    yes: bool = typer.Option(default(DedupeConfig, "yes"), "--yes", help="Confirm --action delete."),
    report_path: Path | None = typer.Option(
        default(DedupeConfig, "report_path"),
        "--report",
        help="HTML report to write, even when nothing changed (not given: reports/dedupe-<time>.html, "
        "only when something changed since the folder's last report there).",
    ),
    workers: int | None = typer.Option(
        default(DedupeConfig, "workers"), "--workers", help="Hashing processes (not given: all cores)."
    ),
    progress: bool | None = PROGRESS_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Find exact and perceptual duplicates in an image folder; report, quarantine or delete them.

    One image per cluster is kept: largest resolution, then earliest (scrape time or file time), then
    path order. Hashes are cached in DIR/.diffkit-hashcache.sqlite, so a rerun only hashes new files.

    Example: diffkit dedupe data/faces --action move --to data/faces-duplicates
    """
    from diffkit.dedupe.run import dedupe as run_dedupe

    def call() -> Any:  # the config checks the folder: its errors go through _run too
        config = DedupeConfig(
            directory=directory,
            hash_kind=hash_kind,
            threshold=threshold,
            min_similarity=min_similarity,
            verify=verify,
            against=against,
            action=action,
            quarantine=to,
            yes=yes,
            report_path=report_path,
            workers=workers,
            progress=_progress(progress),
        )
        return run_dedupe(config)

    _run(call, json_output)


# The configs of train, sample and eval, whose defaults and choices the options below show.

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps."


@app.command()
def train(
    ctx: typer.Context,
    data: Path = typer.Option(
        default(TrainConfig, "data"), "--data", help="Images or a scrape output folder."
    ),
    out: Path | None = typer.Option(None, "--out", help="Run folder. Not given: a new runs/NNNNN-<preset>."),
    preset: PresetName = typer.Option(default(TrainConfig, "preset"), "--preset", help="U-Net size."),
    resolution: int = typer.Option(
        default(TrainConfig, "resolution"), "--resolution", help="Training resolution in pixels."
    ),
    channels: int | None = typer.Option(
        default(TrainConfig, "channels"), "--channels", help="U-Net base width. Not given: the preset's."
    ),
    num_res_blocks: int | None = typer.Option(
        default(TrainConfig, "num_res_blocks"),
        "--num-res-blocks",
        help="Residual blocks per U-Net level (depth). Not given: the preset's.",
    ),
    batch_size: int | None = typer.Option(
        default(TrainConfig, "batch_size"),
        "--batch-size",
        help="Images per optimiser step (global batch). Not given: the preset's ("
        + ", ".join(f"{name} {value}" for name, value in PRESET_BATCH.items())
        + ").",
    ),
    grad_accum: int = typer.Option(
        default(TrainConfig, "grad_accum"), "--grad-accum", help="Micro-batches per step (same global batch)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Run length in optimiser steps."),
    kimg: float | None = typer.Option(None, "--kimg", help="Run length in thousands of training images."),
    epochs: float | None = typer.Option(
        None,
        "--epochs",
        help=f"Run length in passes over the data; {DEFAULT_EPOCHS:g} when no length is given.",
    ),
    lr: float | None = typer.Option(
        default(TrainConfig, "lr"),
        "--lr",
        help="AdamW learning rate after warm-up. Not given: the preset's ("
        + ", ".join(f"{name} {value:g}" for name, value in PRESET_LR.items())
        + ").",
    ),
    warmup_kimg: float = typer.Option(
        default(TrainConfig, "warmup_kimg"), "--warmup-kimg", help="Linear LR warm-up length."
    ),
    schedule: ScheduleName = typer.Option(
        default(TrainConfig, "schedule"), "--schedule", help="Noise schedule."
    ),
    prediction: PredictionName = typer.Option(
        default(TrainConfig, "prediction"), "--prediction", help="Network target."
    ),
    timestep_sampling: TimestepSamplingName = typer.Option(
        default(TrainConfig, "timestep_sampling"),
        "--timestep-sampling",
        help="Training timesteps: uniform, or EDM's lognormal noise levels.",
    ),
    precision: PrecisionName = typer.Option(
        default(TrainConfig, "precision"), "--precision", help="Autocast precision (auto: bf16 where native)."
    ),
    compile_model: bool = typer.Option(
        default(TrainConfig, "compile"), "--compile", help="torch.compile the U-Net (first steps compile)."
    ),
    sample_every_kimg: float = typer.Option(
        default(TrainConfig, "sample_every_kimg"),
        "--sample-every-kimg",
        help="EMA sample grid every K kimg; 0: at the end.",
    ),
    eval_every_kimg: float = typer.Option(
        default(TrainConfig, "eval_every_kimg"),
        "--eval-every-kimg",
        help="FID and KID of EMA samples against the training data every K kimg; 0: off.",
    ),
    eval_samples: int = typer.Option(
        default(TrainConfig, "eval_samples"), "--eval-samples", help="Samples per evaluation while training."
    ),
    eval_steps: int = typer.Option(
        default(TrainConfig, "eval_steps"), "--eval-steps", help="Sampler steps per evaluation sample."
    ),
    eval_reference: int = typer.Option(
        default(TrainConfig, "eval_reference"),
        "--eval-reference",
        help="Training images in the FID reference while training: a fixed random subset; 0: all.",
    ),
    ema_halflife_kimg: float = typer.Option(
        default(TrainConfig, "ema_halflife_kimg"), "--ema-halflife-kimg", help="EMA half-life in kimg."
    ),
    phema_every_kimg: float = typer.Option(
        default(TrainConfig, "phema_every_kimg"),
        "--phema-every-kimg",
        help="Store the post-hoc EMA profiles every K kimg (then: diffkit phema); 0: off.",
    ),
    seed: int = typer.Option(
        default(TrainConfig, "seed"), "--seed", help="Seed for init, data order and noise."
    ),
    labels: LabelsMode = typer.Option(
        default(TrainConfig, "labels"),
        "--labels",
        help="auto: class labels from a label column in metadata.jsonl, else from each image's own folder "
        "name when all images are one depth down (as Hugging Face imagefolder); none: unconditional.",
    ),
    label_dropout: float = typer.Option(
        default(TrainConfig, "label_dropout"),
        "--label-dropout",
        help="Share of labels replaced by the null label (trains the model guidance needs).",
    ),
    device: str = typer.Option(default(TrainConfig, "device"), "--device", help=DEVICE_HELP),
    max_minutes: float | None = typer.Option(
        default(TrainConfig, "max_minutes"),
        "--max-minutes",
        help="Stop cleanly (state, snapshot, report) at the first step after M minutes of training "
        "(the data cache not counted); --resume continues, with a fresh M when given again.",
    ),
    tensorboard: bool | None = typer.Option(
        default(TrainConfig, "tensorboard"),
        "--tensorboard/--no-tensorboard",
        help="TensorBoard event files in RUN/tensorboard. Not given: on when tensorboard is installed.",
        show_default=False,
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (or the latest run)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve config, build the model, print, exit."),
    progress: bool | None = PROGRESS_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Train a DDPM (U-Net, v-prediction, cosine schedule, EMA) on an image folder.

    Writes runs/NNNNN-<preset>/ (config.json, stats.jsonl, state-latest.pt, EMA safetensors snapshots,
    sample grids) and an HTML report under reports/.

    Ctrl-C saves the state; --resume continues it bit-exactly up to the same total.

    Example: diffkit train --data data/faces --preset small --resolution 64 --kimg 2000
    """
    from diffkit.train.run import train as run_training

    # What the user typed, so --resume refuses a changed option even when it equals the default
    # (`--preset small` on a tiny run); --json and --progress are the CLI's, not the run's. Compared by
    # name: Typer may bring its own copy of click, whose ParameterSource is another enum than click's.
    renamed = {"compile_model": "compile"}
    given = frozenset(
        renamed.get(name, name)
        for name in ctx.params
        if name not in ("json_output", "progress")
        and getattr(ctx.get_parameter_source(name), "name", None) in ("COMMANDLINE", "ENVIRONMENT")
    )

    def call() -> Any:
        # None (--out, --steps/--kimg/--epochs): derived in TrainConfig. On --resume an option left at
        # its default keeps the run's saved value (see merge_for_resume).
        config = TrainConfig.from_options(
            data=data,
            out=out,
            preset=preset,
            resolution=resolution,
            channels=channels,
            num_res_blocks=num_res_blocks,
            batch_size=batch_size,
            grad_accum=grad_accum,
            steps=steps,
            kimg=kimg,
            epochs=epochs,
            lr=lr,
            warmup_kimg=warmup_kimg,
            schedule=schedule,
            prediction=prediction,
            timestep_sampling=timestep_sampling,
            precision=precision,
            compile=compile_model,
            sample_every_kimg=sample_every_kimg,
            eval_every_kimg=eval_every_kimg,
            eval_samples=eval_samples,
            eval_steps=eval_steps,
            eval_reference=eval_reference,
            ema_halflife_kimg=ema_halflife_kimg,
            phema_every_kimg=phema_every_kimg,
            seed=seed,
            labels=labels,
            label_dropout=label_dropout,
            device=device,
            max_minutes=max_minutes,
            tensorboard=tensorboard,
            resume=resume,
            dry_run=dry_run,
            progress=_progress(progress),
            given=given,
        )
        return run_training(_with_file_fields(ctx, config))

    result = _run(call, json_output)
    if result is not None and result.interrupted:
        raise typer.Exit(130)


@app.command()
def phema(
    run: Path = typer.Argument(..., metavar="RUN", help="Training run trained with --phema-every-kimg."),
    sigma_rel: float = typer.Option(
        ...,
        "--sigma-rel",
        help="EMA length as the averaging profile's std over the run's length, 0.001 to 0.28.",
    ),
    kimg: float | None = typer.Option(
        None, "--kimg", help="At the last stored profile at or before K kimg. Not given: the last one."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="File to write. Not given: RUN/phema/posthoc-<sigma_rel>-<nimg>.safetensors."
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Make the EMA of any length after training (post-hoc EMA, Karras et al. 2024).

    Combines the sigma_rel 0.05 and 0.10 profiles that `diffkit train --phema-every-kimg K` stored into
    the nearest (least-squares) profile of --sigma-rel, and writes it as an EMA snapshot that sample,
    eval and export take with --snapshot. The default EMA of diffkit train is close to sigma_rel 0.07.

    Example: diffkit phema runs/00000-small --sigma-rel 0.1 && diffkit sample --run runs/00000-small
    --snapshot runs/00000-small/phema/posthoc-0.100-<nimg>.safetensors
    """

    def call() -> Any:
        from diffkit.phema.config import PhemaConfig
        from diffkit.phema.run import posthoc_snapshot

        return posthoc_snapshot(PhemaConfig(run=run, sigma_rel=sigma_rel, kimg=kimg, out=out))

    _run(call, json_output)


@app.command()
def sample(
    run: Path = typer.Option(..., "--run", help="Training run folder (uses its latest EMA snapshot)."),
    n: int = typer.Option(
        default(SampleConfig, "n"),
        "--n",
        help="Number of images (written batch by batch; refused at once if they cannot fit on the disk).",
    ),
    sampler: SamplerName = typer.Option(
        default(SampleConfig, "sampler"),
        "--sampler",
        help="ddim (deterministic), dpmpp (DPM-Solver++(2M), good in 10-25 steps) or ddpm (ancestral).",
    ),
    steps: int = typer.Option(
        default(SampleConfig, "steps"), "--steps", help="Denoising steps (model calls per image)."
    ),
    eta: float = typer.Option(
        default(SampleConfig, "eta"), "--eta", help="DDIM noise: 0 deterministic, 1 like DDPM."
    ),
    seed: int = typer.Option(
        default(SampleConfig, "seed"), "--seed", help="Image i's start noise depends only on (seed, i)."
    ),
    out: Path | None = typer.Option(
        default(SampleConfig, "out"), "--out", help="Folder for the PNGs. Not given: RUN/generated/..."
    ),
    grid: bool = typer.Option(
        default(SampleConfig, "grid"),
        "--grid",
        help=f"Also write grid.png with all images (the first {GRID_MAX} when there are more).",
    ),
    batch_size: int = typer.Option(
        default(SampleConfig, "batch_size"), "--batch-size", help="Images per forward pass."
    ),
    snapshot: Path | None = typer.Option(
        default(SampleConfig, "snapshot"), "--snapshot", help="This ema-*.safetensors instead of the latest."
    ),
    device: str = typer.Option(default(SampleConfig, "device"), "--device", help=DEVICE_HELP),
    precision: PrecisionName = typer.Option(
        default(SampleConfig, "precision"),
        "--precision",
        help="Autocast precision (auto: bf16 where native).",
    ),
    label: str | None = typer.Option(
        default(SampleConfig, "label"), "--label", help="Sample this class of a labelled run (its name)."
    ),
    guidance: float | None = typer.Option(
        default(SampleConfig, "guidance"),
        "--guidance",
        help=f"Classifier-free guidance W for --label, 0 to {MAX_GUIDANCE:g}: {DEFAULT_GUIDANCE:g} if not "
        "given; 0: no guidance.",
    ),
    gif: Path | None = typer.Option(
        default(SampleConfig, "gif"),
        "--gif",
        help="Also write the denoising animation (x_t | predicted x_0) to FILE: .gif, .webp or .png.",
    ),
    report_path: Path | None = typer.Option(
        default(SampleConfig, "report"),
        "--report",
        help="HTML report path (not given: reports/sample-<time>.html).",
    ),
    progress: bool | None = PROGRESS_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Sample PNG images from a trained run's EMA weights (safetensors; nothing is unpickled).

    Example: diffkit sample --run runs/00000-small --n 64 --steps 50 --grid
    """
    from diffkit.sample.run import sample as run_sampling

    def call() -> Any:
        config = SampleConfig(
            run=run,
            n=n,
            sampler=sampler,
            steps=steps,
            eta=eta,
            seed=seed,
            out=out,
            grid=grid,
            batch_size=batch_size,
            device=device,
            precision=precision,
            snapshot=snapshot,
            label=label,
            guidance=guidance,
            gif=gif,
            report=report_path,
            progress=_progress(progress),
        )
        return run_sampling(config)

    _run(call, json_output)


@app.command()
def export(
    run: Path = typer.Argument(
        ..., metavar="RUN", help="Training run folder (uses its latest EMA snapshot)."
    ),
    out: Path = typer.Argument(..., metavar="OUT", help="Folder to write; must not exist or be empty."),
    export_format: ExportFormat = typer.Option(
        default(ExportConfig, "format"), "--format", help="diffusers: UNet2DModel + DDIMScheduler folder."
    ),
    snapshot: Path | None = typer.Option(
        default(ExportConfig, "snapshot"), "--snapshot", help="This ema-*.safetensors instead of the latest."
    ),
    force: bool = typer.Option(
        default(ExportConfig, "force"),
        "--force",
        help="Write into a non-empty OUT, replacing the exported files.",
    ),
    reports_dir: Path = typer.Option(
        default(ExportConfig, "reports_dir"),
        "--reports",
        help="Where `diffkit eval --run RUN` wrote reports: the model card quotes the newest one.",
    ),
    license_id: str | None = typer.Option(
        default(ExportConfig, "license"),
        "--license",
        metavar="ID",
        help="The model card's licence (mit, cc-by-4.0, other...); default unknown, with the scraped "
        "site's terms named.",
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Export a run's EMA weights for another library, with a model card (README.md).

    diffusers: UNet2DModel.from_pretrained(OUT, subfolder="unet") and DDIMPipeline.from_pretrained(OUT)
    load it; the same noise gives the images of diffkit sample --sampler ddim.

    Example: diffkit export runs/00000-tiny --format diffusers exported/faces-tiny
    """
    from diffkit.export.run import export as run_export

    def call() -> Any:
        config = ExportConfig(
            run=run, out=out, format=export_format, snapshot=snapshot, force=force, reports_dir=reports_dir,
            license=license_id,
        )  # fmt: skip
        return run_export(config)

    _run(call, json_output)


@app.command("eval")
def eval_(
    samples: int = typer.Option(
        default(EvalConfig, "samples"),
        "--samples",
        help="Generated images to evaluate (N). With --run: sampled batch by batch, refused at once if they "
        "cannot fit on the disk.",
    ),
    metrics: str = typer.Option(
        ",".join(default(EvalConfig, "metrics")),
        "--metrics",
        help="Comma list of fid,kid,is,prc,memorization (prc: precision, recall, density, coverage).",
    ),
    run: Path | None = typer.Option(None, "--run", help="Run folder: sample N images from its EMA snapshot."),
    generated: Path | None = typer.Option(
        None, "--generated", help="Folder of generated images (the first N are used)."
    ),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        help="Reference images, or a statistics file (.npz from --save-stats, or pytorch-fid's: FID only). "
        "Not given with --run: the run's training data.",
    ),
    reference_samples: int | None = typer.Option(
        None, "--reference-samples", help="Use only the first M reference images. Not given: all."
    ),
    engine: EngineName = typer.Option(
        default(EvalConfig, "engine"),
        "--engine",
        help="Feature extractor (their numbers are not comparable).",
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Inception weights (else $DIFFKIT_INCEPTION_WEIGHTS, else the engine cache)."
    ),
    vgg_weights: Path | None = typer.Option(
        None, "--vgg-weights", help="VGG16 weights for prc (else $DIFFKIT_VGG16_WEIGHTS, else torch hub)."
    ),
    features: str = typer.Option(
        default(EvalConfig, "features"),
        "--features",
        help="Space of fid, kid and prc: inception or dinov2 (DINOv2 ViT-L/14). IS stays Inception's.",
    ),
    dinov2_weights: Path | None = typer.Option(
        None,
        "--dinov2-weights",
        help="DINOv2 ViT-L/14 weights for --features dinov2 (else $DIFFKIT_DINOV2_WEIGHTS, else torch hub).",
    ),
    save_stats: Path | None = typer.Option(
        None, "--save-stats", help="Also write the reference's feature mean and covariance to this .npz."
    ),
    batch_size: int = typer.Option(
        default(EvalConfig, "batch_size"), "--batch-size", help="Images per feature-extractor batch."
    ),
    device: str = typer.Option(default(EvalConfig, "device"), "--device", help=DEVICE_HELP),
    report_path: Path | None = typer.Option(
        None, "--report", help="HTML report path. Not given: reports/eval-<time>.html."
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Feature cache folder. Not given: ~/.cache/diffkit/features."
    ),
    seed: int = typer.Option(
        default(EvalConfig, "seed"), "--seed", help="Sampling seed for --run; bootstrap seeds derive from it."
    ),
    sampler: SamplerName = typer.Option(
        default(EvalConfig, "sampler"), "--sampler", help="Sampler for --run."
    ),
    steps: int = typer.Option(default(EvalConfig, "steps"), "--steps", help="Sampling steps for --run."),
    bootstrap: int = typer.Option(
        default(EvalConfig, "bootstrap"), "--bootstrap", help="Bootstrap replicates for CIs (0: off)."
    ),
    progress: bool | None = PROGRESS_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """FID, KID and IS (plus precision/recall/density/coverage, memorization), caveats in numbers.

    Example: diffkit eval --run runs/00000-small --samples 1000 --metrics fid,kid,is

    Example: diffkit eval --generated samples/ --reference data/faces --samples 500 --json

    Example: diffkit eval --generated samples/ --reference data/faces --features dinov2 --metrics fid,kid,prc

    Example: diffkit eval --generated samples/ --reference ref-stats.npz --metrics fid
    """
    from diffkit.eval.config import parse_metrics
    from diffkit.eval.run import evaluate

    def call() -> Any:
        config = EvalConfig(
            samples=samples,
            metrics=parse_metrics(metrics),
            run=run,
            generated=generated,
            reference=reference,
            reference_samples=reference_samples,
            engine=engine,
            features=features,
            weights=weights,
            vgg_weights=vgg_weights,
            dinov2_weights=dinov2_weights,
            save_stats=save_stats,
            batch_size=batch_size,
            device=device,
            report=report_path,
            cache_dir=cache_dir,
            seed=seed,
            sampler=sampler,
            steps=steps,
            bootstrap=bootstrap,
            progress=_progress(progress),
        )
        return evaluate(config)

    _run(call, json_output)


@app.command()
def report(
    reports_dir: Path = typer.Argument(
        default(IndexConfig, "reports_dir"), help="Folder of reports written by diffkit."
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Write reports/index.html (every report, its headline) and one page per dataset + run.

    A run page summarises and links the scrape, dedupe, train, sample and eval reports of one run, with
    their pictures, caveats and config (reports/run-<name>-<hash>.html).

    Example: diffkit report reports
    """
    from diffkit.report.index import build_index

    _run(lambda: build_index(IndexConfig(reports_dir=reports_dir)), json_output)


@app.command()
def demo(
    out: Path = typer.Option(default(DemoConfig, "out"), "--out", help="Folder for the demo's data and run."),
    n: int = typer.Option(
        default(DemoConfig, "n_images"), "--n", help="Unique images to scrape from the local site."
    ),
    resolution: int = typer.Option(
        default(DemoConfig, "resolution"), "--resolution", help="Training resolution in pixels."
    ),
    steps: int = typer.Option(
        default(DemoConfig, "train_steps"), "--steps", help="Training steps of the tiny preset."
    ),
    eval_samples: int = typer.Option(
        default(DemoConfig, "eval_samples"), "--eval-samples", help="Samples for FID/KID."
    ),
    weights: Path | None = typer.Option(
        default(DemoConfig, "weights"), "--weights", help="Inception weights file for eval."
    ),
    device: str = typer.Option(default(DemoConfig, "device"), "--device", help=DEVICE_HELP),
    seed: int = typer.Option(
        default(DemoConfig, "seed"), "--seed", help="Seed of the site, the training and the samples."
    ),
    progress: bool | None = PROGRESS_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Run the whole pipeline on a local fake-face site: scrape, dedupe, train, sample, eval.

    Needs no internet except for eval's Inception weights (eval is skipped, with the reason, when they
    cannot be had). Rerunning resumes. Takes a few minutes on a laptop CPU.

    Example: diffkit demo --out demo --n 300 --steps 300
    """
    from diffkit.demo import run_demo

    def call() -> Any:
        config = DemoConfig(
            out=out,
            n_images=n,
            resolution=resolution,
            train_steps=steps,
            eval_samples=eval_samples,
            weights=weights,
            device=device,
            seed=seed,
            progress=_progress(progress),
        )
        return run_demo(config)

    _run(call, json_output)


def main() -> None:
    """Console entry point. Click's usage errors (a bad option or value) become one line, exit 2."""
    try:
        returned = app(standalone_mode=False)
    except click_exceptions.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "diffkit"
        err_console.print(
            f"[bold red]error:[/] {exc.format_message()} (see '{command} --help')",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(exc.exit_code)
    except click_exceptions.ClickException as exc:
        err_console.print(f"[bold red]error:[/] {exc.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (Abort, KeyboardInterrupt):
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except BrokenPipeError:  # e.g. `diffkit --help | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    sys.exit(returned if isinstance(returned, int) else 0)


if __name__ == "__main__":
    main()
