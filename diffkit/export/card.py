"""The model card (``README.md``) of an exported run: data, config, training length, metrics and caveats.

Everything in it comes from the run's own files (``config.json``, the snapshot's metadata,
``stats.jsonl``) and from the newest ``diffkit eval --run`` report of the run, quoted with its sample
sizes and caveats; with no such report the card says so and claims no metric. User text (folder and
class names) is escaped so it cannot change the Markdown around it. The training data's location is
given by folder name only: the full path is a detail of the machine the run was trained on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from diffkit.metrics import caveats as cav
from diffkit.report.render import visible
from diffkit.report.runpage import eval_run
from diffkit.report.sidecars import Sidecar, folder_key
from diffkit.runs.folder import EVAL_KIND, class_names


@dataclass(frozen=True)
class CardInputs:
    run: Path
    snapshot: Path
    out_name: str
    payload: dict[str, Any]  # the run config the snapshot was written with
    parameters: int
    nimg: int | None
    step: int | None
    stats: list[dict[str, Any]] = field(default_factory=list)
    evaluation: Sidecar | None = None
    license: str | None = None  # --license ID; None: "unknown"
    source_url: str | None = None  # where the training images were scraped from (the manifest's endpoint)
    grid_nimg: int | None = None  # the training grid copied as samples.png: at this many images


def md(value: object) -> str:
    """User text as literal Markdown: one line, with the characters Markdown and HTML act on escaped.

    Line breaks of any kind become spaces; bidi overrides, controls and undecodable bytes are written
    out (``\\u202e``), so a class name cannot reverse or hide the card's text around it.
    """
    text = visible(" ".join(str(value).split()))
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~])", r"\\\1", text)


def code(value: object) -> str:
    """User text as an inline code span: shown as it is (no escapes apply there), one line, visible.

    The fence is one backtick longer than any run of backticks in the text, as CommonMark asks.
    """
    text = visible(" ".join(str(value).split()))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"


def py_str(value: str) -> str:
    """``value`` as a Python string literal for the card's code, double-quoted where that is exact.

    ``repr`` escapes quotes, line breaks and every non-printable character (bidi overrides included).
    """
    literal = repr(value)
    if literal.startswith("'") and '"' not in value and "'" not in value:
        literal = '"' + literal[1:-1] + '"'
    return literal


def newest_evaluation(run: Path, reports_dir: Path, sidecars: list[Sidecar]) -> Sidecar | None:
    """The newest ``diffkit eval`` report among ``sidecars`` (newest first, read from ``reports_dir``)
    whose images this run made (their provenance, or ``--run``; relative to where it ran)."""
    base = reports_dir.resolve().parent  # the folder the commands ran in, for the default reports/
    target = run.resolve()
    for sidecar in sidecars:
        found = eval_run(sidecar) if sidecar.command == "eval" else None
        if sidecar.command == "eval" and found and Path(folder_key(found, base)).resolve() == target:
            return sidecar
    return None


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min" if seconds < 7200 else f"{seconds / 3600:.3g} h"


def _section(payload: dict[str, Any], name: str) -> dict[str, Any]:
    section = payload.get(name)
    return section if isinstance(section, dict) else {}


def _usage(inputs: CardInputs) -> list[str]:
    steps = 20
    timesteps = _section(inputs.payload, "diffusion").get("timesteps")
    lines = ["## Use", ""]
    names = class_names(inputs.payload)
    if not names:
        lines += [
            "```python",
            "from diffusers import DDIMPipeline",
            "",
            f"pipe = DDIMPipeline.from_pretrained({py_str(inputs.out_name)})",
            f"images = pipe(batch_size=4, num_inference_steps={steps}, use_clipped_model_output=True).images",
            "```",
            "",
        ]
    else:
        null = len(names)
        lines += [
            "Class-conditional: `DDIMPipeline` passes no labels, so sample with the U-Net and the scheduler",
            f"(class `i` below; `{null}` is the null label that classifier-free guidance uses):",
            "",
            "```python",
            "import torch",
            "from diffusers import DDIMScheduler, UNet2DModel",
            "",
            f'unet = UNet2DModel.from_pretrained({py_str(inputs.out_name)}, subfolder="unet")',
            f'scheduler = DDIMScheduler.from_pretrained({py_str(inputs.out_name)}, subfolder="scheduler")',
            "label, w = 0, 1.0  # class index, guidance weight (0: none)",
            "x = torch.randn(4, 3, unet.config.sample_size, unet.config.sample_size)",
            f"scheduler.set_timesteps({steps})",
            "labels = torch.tensor([label] * 4 + [" + str(null) + "] * 4)",
            "for t in scheduler.timesteps:",
            "    with torch.no_grad():",
            "        cond, uncond = unet(torch.cat([x, x]), t, class_labels=labels).sample.chunk(2)",
            "    out = uncond + (1 + w) * (cond - uncond)",
            "    x = scheduler.step(out, t, x, use_clipped_model_output=True).prev_sample",
            "images = (x.clamp(-1, 1) + 1) / 2  # NCHW in [0, 1]",
            "```",
            "",
            "| class | name |",
            "|---|---|",
            *[f"| {index} | {md(name)} |" for index, name in enumerate(names)],
            "",
        ]
    lines += [
        "`use_clipped_model_output=True` makes diffusers' DDIM step the one `diffkit sample --sampler ddim`",
        "takes (x0 clipped to [-1, 1] and the noise re-derived from it). With a step count that divides",
        f"{timesteps} the timesteps are the same too; for other counts diffusers steps from t to",
        f"t - {timesteps} // steps, diffkit to the next trailing timestep, so the images differ slightly.",
        "",
    ]
    return lines


# diffkit draws image i of --seed s from its own CPU generator seeded s * 1_000_003 + i (diffkit.sample.
# generate: _SEED_STRIDE; export cannot import sample, a module of its rank). tests/test_model_card.py
# runs this snippet and compares it with the noise diffkit sample actually starts from.
NOISE_STRIDE = 1_000_003
SAMPLES_FILE = "samples.png"


def _noise(inputs: CardInputs) -> list[str]:
    conditional = bool(class_names(inputs.payload))
    lines = [
        "## Starting noise (the same images as `diffkit sample --seed`)",
        "",
        "`diffkit sample --seed S` starts image `i` from noise drawn on the CPU by its own generator, seeded",
        f"`S * {NOISE_STRIDE:_} + i`, whatever the device and batch size. This gives a diffusers user the",
        "same starting noise, so DDIM from it gives the images of `diffkit sample --sampler ddim --seed S`:",
        "",
        "```python",
        "import torch",
        "",
        "",
        "def diffkit_noise(seed: int, n: int, channels: int, size: int) -> torch.Tensor:",
        "    noise = []",
        "    for i in range(n):",
        f"        generator = torch.Generator().manual_seed(seed * {NOISE_STRIDE} + i)",
        "        noise.append(torch.randn(channels, size, size, generator=generator))",
        "    return torch.stack(noise)",
        "```",
        "",
    ]
    if conditional:
        return [
            *lines,
            "In the loop above, start from `x = diffkit_noise(seed, 4, unet.config.in_channels, "
            "unet.config.sample_size)` instead of `torch.randn(...)`.",
            "",
        ]
    return [
        *lines,
        "```python",
        "from diffusers import DDIMScheduler, UNet2DModel",
        "",
        f'unet = UNet2DModel.from_pretrained({py_str(inputs.out_name)}, subfolder="unet")',
        f'scheduler = DDIMScheduler.from_pretrained({py_str(inputs.out_name)}, subfolder="scheduler")',
        "seed, steps = 0, 20  # diffkit sample --sampler ddim --steps 20 --seed 0",
        "x = diffkit_noise(seed, 4, unet.config.in_channels, unet.config.sample_size)",
        "scheduler.set_timesteps(steps)",
        "for t in scheduler.timesteps:",
        "    with torch.no_grad():",
        "        x = scheduler.step(unet(x, t).sample, t, x, use_clipped_model_output=True).prev_sample",
        "images = (x.clamp(-1, 1) + 1) / 2  # NCHW in [0, 1]",
        "```",
        "",
    ]


def _license(inputs: CardInputs) -> list[str]:
    lines = ["## License", ""]
    if inputs.license is not None:
        lines.append(f"Released as `{inputs.license}` (`diffkit export --license`).")
    else:
        lines.append(
            "`unknown`: no licence was given (`diffkit export --license ID` sets one). Do not assume one."
        )
    if inputs.source_url is not None:
        parts = urlsplit(inputs.source_url)
        host = parts.hostname or "the source site"
        lines += [
            "",
            f"The training images were scraped from {code(host)} ({code(inputs.source_url)}). That site's "
            f"terms govern them, and {md(host)} publishes no licence for its images that diffkit knows of:",
            f"read {code(f'{parts.scheme}://{host}/')}'s terms before you share this model or its samples.",
        ]
    return [*lines, ""]


def _samples(inputs: CardInputs) -> list[str]:
    if inputs.grid_nimg is None:
        return ["## Samples", "", "The run wrote no sample grid while training, so none is shown.", ""]
    return [
        "## Samples",
        "",
        f"![EMA samples at {_number(inputs.grid_nimg / 1000)} kimg]({SAMPLES_FILE})",
        "",
        f"The run's fixed-noise EMA samples at {_number(inputs.grid_nimg / 1000)} kimg (DDIM), as training "
        "wrote them.",
        "",
    ]


def _finished(inputs: CardInputs) -> str:
    planned = _section(inputs.payload, "plan").get("total_nimg")
    if inputs.nimg is None or not isinstance(planned, int) or isinstance(planned, bool):
        return "- finished: unknown (the snapshot or the plan does not say)"
    if inputs.nimg >= planned:
        return f"- finished: yes, all {_number(planned / 1000)} kimg planned"
    return (
        f"- finished: no, interrupted or stopped early: this snapshot is at {_number(inputs.nimg / 1000)} of "
        f"the {_number(planned / 1000)} kimg planned ({100 * inputs.nimg / planned:.0f}%)"
    )


def _data(inputs: CardInputs) -> list[str]:
    train, plan = _section(inputs.payload, "train"), _section(inputs.payload, "plan")
    data = train.get("data")
    lines = ["## Data", ""]
    lines.append(
        f"- folder: {code(Path(data).name)}" if isinstance(data, str) and data else "- folder: unknown"
    )
    lines.append(f"- images: {_number(plan.get('dataset_size'))}, at {_number(train.get('resolution'))} px")
    lines.append(f"- horizontal flips: {'yes' if train.get('hflip') else 'no'}")
    labels = inputs.payload.get("labels")
    if isinstance(labels, dict) and class_names(inputs.payload):
        counts = labels.get("counts")
        shown = ", ".join(
            f"{md(name)} ({_number(counts.get(name))})" if isinstance(counts, dict) else md(name)
            for name in class_names(inputs.payload)
        )
        lines.append(f"- classes ({md(labels.get('source', 'labels'))}): {shown}")
        lines.append(f"- label dropout (trains the null label): {_number(labels.get('label_dropout'))}")
    return [*lines, ""]


def _config(inputs: CardInputs) -> list[str]:
    train, diffusion = _section(inputs.payload, "train"), _section(inputs.payload, "diffusion")
    model = _section(inputs.payload, "model")
    rows = [
        ("preset", md(train.get("preset", "—"))),
        ("parameters", f"{inputs.parameters:,}"),
        *[(f"model.{key}", md(json.dumps(value))) for key, value in model.items()],
        *[(f"diffusion.{key}", md(json.dumps(value))) for key, value in diffusion.items()],
        *[
            (key, md(json.dumps(train.get(key))))
            for key in ("batch_size", "lr", "warmup_kimg", "ema_halflife_kimg", "precision", "seed")
            if key in train
        ],
    ]
    return ["## Config", "", "| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]


def _training(inputs: CardInputs) -> list[str]:
    plan = _section(inputs.payload, "plan")
    lines = ["## Training length", ""]
    if inputs.nimg is not None:
        planned = plan.get("total_nimg")
        of = f" of the {_number(planned / 1000)} kimg planned" if isinstance(planned, (int, float)) else ""
        lines.append(
            f"- this snapshot: {_number(inputs.nimg / 1000)} kimg ({_number(inputs.nimg)} images, "
            f"step {_number(inputs.step)}){of}"
        )
    lines.append(_finished(inputs))
    size = plan.get("dataset_size")
    if inputs.nimg is not None and isinstance(size, int) and size > 0:
        lines.append(f"- epochs: {inputs.nimg / size:.3g} passes over the {size:,} training images")
    upto = [r for r in inputs.stats if inputs.step is None or r.get("step", 0) <= inputs.step]
    if upto:
        last = upto[-1]
        lines.append(f"- loss (last logging window): {_number(last.get('loss'))}")
        seconds = last.get("train_seconds")
        if isinstance(seconds, (int, float)):
            device = code(_section(inputs.payload, "train").get("device", "?"))
            lines.append(f"- training time: {_duration(seconds)} (device {device})")
    return [*lines, ""]


def training_evaluation(stats: list[dict[str, Any]], step: int | None) -> dict[str, Any] | None:
    """The last FID/KID record written while training, at or before the snapshot's step."""
    found = [
        r
        for r in stats
        if r.get("kind") == EVAL_KIND
        and isinstance(r.get("step"), int)
        and isinstance(r.get("fid"), (int, float))
        and (step is None or r["step"] <= step)
    ]
    return found[-1] if found else None


def _training_metrics(record: dict[str, Any]) -> list[str]:
    n, m = record.get("n"), record.get("n_reference")
    lines = [
        f"During training (step {_number(record.get('step'))}, {_number(record.get('kimg'))} kimg), on "
        f"{_number(n)} EMA samples ({md(record.get('sampler', '?'))}, {_number(record.get('sampler_steps'))} "
        "steps) against the training images:",
        "",
        f"- {md(record.get('headline', ''))}",
    ]
    if isinstance(record.get("kid"), (int, float)):
        lines.append(f"- KID@{_number(n)}: {_number(record['kid'])} ± {_number(record.get('kid_std'))}")
    if isinstance(n, int) and isinstance(m, int):
        notes = cav.fid_caveats(n, m, None, None, float(record["fid"]))[:3]
        if isinstance(record.get("kid_subset_size"), int):
            notes += cav.kid_caveats(n, m, record["kid_subset_size"], None, 0)
        lines += ["", "Caveats:", "", *[f"- {md(note)}" for note in notes]]
    return [*lines, ""]


def _eval_report(sidecar: Sidecar) -> list[str]:
    data = sidecar.content.get("data") if isinstance(sidecar.content.get("data"), dict) else {}
    lines = [
        f"From `diffkit eval` ({md(sidecar.json_path.name)}, {md(sidecar.created)}): the run's EMA snapshot "
        "at the time, which may be older than this one.",
        "",
    ]
    if data.get("fid_headline"):
        lines.append(f"- {md(data['fid_headline'])}")
    interval = data.get("fid_ci95")
    if isinstance(interval, list) and len(interval) == 2:  # the sidecar is a file: check its shape
        low, high = interval
        lines.append(f"  - 95% bootstrap interval: {_number(low)} – {_number(high)}")
    if data.get("kid_mean") is not None:
        kid = f"{_number(data['kid_mean'])} ± {_number(data.get('kid_std'))}"
        lines.append(f"- KID@{_number(data.get('n_generated'))}: {kid}")
    if data.get("is_mean") is not None:
        lines.append(
            f"- IS: {_number(data['is_mean'])} ± {_number(data.get('is_std'))} (not meaningful for faces)"
        )
    if data.get("precision") is not None:
        lines.append(f"- precision {_number(data['precision'])}, recall {_number(data.get('recall'))}")
    memorization = data.get("memorization")
    if isinstance(memorization, dict) and "n_flagged" in memorization:
        lines.append(f"- near-copies of training images: {_number(memorization['n_flagged'])}")
    listed = data.get("caveats")
    caveats = [c for c in listed if isinstance(c, str)] if isinstance(listed, list) else []
    if caveats:
        lines += ["", "Caveats:", "", *[f"- {md(c)}" for c in caveats]]
    return [*lines, ""]


def _metrics(inputs: CardInputs) -> list[str]:
    lines = ["## Metrics", ""]
    during = training_evaluation(inputs.stats, inputs.step)
    if during is not None:
        lines += _training_metrics(during)
    if inputs.evaluation is not None:
        lines += _eval_report(inputs.evaluation)
    if during is None and inputs.evaluation is None:
        lines += [
            "No evaluation of this run was found (neither FID/KID while training nor a `diffkit eval --run`",
            "report), so this card claims no metric.",
            "",
        ]
    return lines


def model_card(inputs: CardInputs) -> str:
    train = _section(inputs.payload, "train")
    conditional = bool(class_names(inputs.payload))
    pipeline_tag = "image-generation" if conditional else "unconditional-image-generation"
    title = (
        f"{md(inputs.run.name)}: a diffkit DDPM U-Net ({md(train.get('preset', 'custom'))}, "
        f"{_number(train.get('resolution'))} px)"
    )
    lines = [
        "---",
        f"license: {inputs.license or 'unknown'}",
        "library_name: diffusers",
        f"pipeline_tag: {pipeline_tag}",
        "tags:",
        "- diffkit",
        "- ddpm",
        "- ddim",
        "---",
        "",
        f"# {title}",
        "",
        f"Exported by `diffkit export --format diffusers` from {code(inputs.snapshot.name)} of the run "
        f"{code(inputs.run.name)}: `unet/` is a `UNet2DModel`, `scheduler/` a `DDIMScheduler` with the "
        "run's noise schedule and prediction type.",
        "",
        *_samples(inputs),
        *_usage(inputs),
        *_noise(inputs),
        *_data(inputs),
        *_license(inputs),
        *_config(inputs),
        *_training(inputs),
        *_metrics(inputs),
    ]
    return "\n".join(lines).rstrip() + "\n"
