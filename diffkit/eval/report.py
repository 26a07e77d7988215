"""The HTML report of ``diffkit eval``: metric table with intervals and badges, FID vs 1/N, samples,
memorization gallery, library versions, seeds and set sizes (JSON sidecar with the same numbers)."""

from __future__ import annotations

import importlib.metadata
import math
import platform

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from diffkit.eval.config import EvalConfig
from diffkit.eval.result import EvalResult
from diffkit.metrics.images import ImageSet, load_images
from diffkit.metrics.memorization import MemorizationResult, pair_image
from diffkit.report.model import Report, ReportImage, ReportPaths, Section
from diffkit.report.plots import PLOT_SIZE
from diffkit.report.render import format_value, write_report
from diffkit.sample.provenance import SCHEMA as PROVENANCE_SCHEMA
from diffkit.sample.provenance import made_by, read_provenance

LIBRARIES = (
    "diffkit",
    "torch",
    "torchvision",
    "torch-fidelity",
    "clean-fid",
    "timm",
    "numpy",
    "scipy",
    "pillow",
)
GRID_IMAGES = 64
GRID_WIDTH_PX = 768  # 8 columns of 32 px samples would show at ~270 px: too small to judge


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _key_values(mapping: dict[str, object]) -> list[dict[str, object]]:
    """A two-column table (one row per field): a one-row table of 15 columns overflows the page."""
    return [{"field": key, "value": value} for key, value in mapping.items()]


def _interval(values: list[float] | None, clipped: bool = False) -> str:
    """``6,400.1 – 6,812.4``: the number format of every other cell; an en dash, as numbers carry commas.

    ``clipped``: the lower end was cut at 0 (the metric cannot go below), and the cell says so.
    """
    if not values:
        return ""
    low = format_value(values[0]) + (" (clipped at 0)" if clipped else "")
    return f"{low} – {format_value(values[1])}"


def _plus_minus(mean: float, std: float | None) -> str:
    return f"{format_value(mean)} ± {format_value(std)}"


def _fid_infinity_row(result: EvalResult) -> dict[str, object]:
    problems = result.fid_infinity_problems
    name = f"{result.space.fd}∞"
    return {
        "metric": f"{name} (untrusted fit)" if problems else f"{name} (estimate)",
        "value": result.fid_infinity,
        "95% interval": "",
        "note": (
            "do not quote: " + "; ".join(problems)
            if problems
            else f"intercept of FID vs 1/N (Chong & Forsyth 2020), R² {format_value(result.fid_curve['r2'])}"
            if result.fid_curve and "r2" in result.fid_curve
            else "intercept of FID vs 1/N (Chong & Forsyth 2020)"
        ),
    }


def _network_note(result: EvalResult) -> str:
    return f"engine {result.engine}" if result.features == "inception" else "timm"


def _prc_rows(result: EvalResult) -> list[dict[str, object]]:
    """One row per k: the chosen k first, then the others (the small-N sensitivity to k)."""
    by_k = result.prc_by_k or {str(result.prc_k): {"precision": result.precision, "recall": result.recall}}
    order = [str(result.prc_k)] + [k for k in by_k if k != str(result.prc_k)]
    rows = []
    for k in order:
        values = by_k[k]
        names = " / ".join(values)
        rows.append(
            {
                "metric": names,
                "value": " / ".join(format_value(value) for value in values.values()),
                "95% interval": "",
                "note": f"{result.prc_network or 'VGG16 fc2'}, k={k}"
                + ("" if k == str(result.prc_k) else " (sensitivity to k)"),
            }
        )
    return rows


def _metric_rows(result: EvalResult) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    if result.fid is not None:
        rows.append(
            {
                "metric": result.fid_label,
                "value": result.fid,
                "95% interval": _interval(result.fid_ci95, result.fid_ci95_clipped),
                "note": f"{result.space.network} features ({_network_note(result)}), "
                f"{result.weights_status}; bootstrap, generated resampled",
            }
        )
    if result.fid_infinity is not None:
        rows.append(_fid_infinity_row(result))
    if result.kid_mean is not None:
        rows.append(
            {
                "metric": f"{result.space.kd}@{result.n_generated}",
                "value": _plus_minus(result.kid_mean, result.kid_std),
                "95% interval": _interval(result.kid_ci95),
                "note": f"{result.kid_subsets} subsets of {result.kid_subset_size}; ± is subset std",
            }
        )
    if result.is_mean is not None:
        rows.append(
            {
                "metric": "IS",
                "value": _plus_minus(result.is_mean, result.is_std),
                "95% interval": "",
                "note": "not meaningful for faces",
            }
        )
    if result.precision is not None:
        rows += _prc_rows(result)
    if result.memorization is not None:
        rows.append(
            {
                "metric": "near-copies",
                "value": result.memorization["share_flagged"],
                "95% interval": "",
                "note": "share with pixel NN1/NN2 < 1/3",
            }
        )
    return rows


def _badges(result: EvalResult) -> list[str]:
    badges = [f"features: {result.space.network}"]
    if "inception" in result.weights or result.features == "inception":
        badges.append(f"engine: {result.engine}")
    if result.fid is not None:
        badges.append(f"{result.space.fd}@{result.n_generated}")
        if min(result.n_generated, result.n_reference or result.n_generated) < result.space.dims:
            badges.append("rank-deficient covariance")
        if result.fid_ci95_clipped:
            badges.append(f"{result.space.fd} interval clipped at 0")
    if result.reference_stats is not None:
        badges.append(f"reference: {result.reference_stats['source']} statistics")
    if result.kid_subset_size is not None and result.kid_subset_size == result.n_generated:
        badges.append("KID subset = N")
    elif result.kid_subset_size is not None and result.kid_subset_size == result.n_reference:
        badges.append("KID subset = M")
    if result.is_mean is not None:
        badges.append("IS not meaningful for faces")
    if result.weights_status == "unofficial weights":
        badges.append("unofficial weights")
    if result.fid_infinity_problems:
        badges.append("FID∞ fit untrusted")
    if any("bootstrap replicates" in note or "outside its own" in note for note in result.caveats):
        badges.append("too few bootstrap replicates")
    return badges


def _curve_figure(curve: dict, trusted: bool, name: str = "FID") -> Figure:
    figure = Figure(figsize=PLOT_SIZE)
    axes = figure.add_subplot()
    inverse = [1.0 / size for size in curve["sizes"]]
    axes.plot(inverse, curve["fids"], "o", label=f"{name} of a random subset")
    line_x = np.linspace(0, max(inverse), 50)
    fit = f"linear fit, R² {curve['r2']:.2f}" if "r2" in curve else "linear fit"
    axes.plot(line_x, curve["intercept"] + curve["slope"] * line_x, "-", label=fit)
    mark = f"{name}∞ ≈" if trusted else f"untrusted {name}∞ ≈"
    axes.plot([0], [curve["intercept"]], "s", label=f"{mark} {format_value(curve['intercept'])}")
    axes.set_xlabel("1 / N (generated subset size)")
    axes.set_ylabel(name)
    axes.legend()
    axes.grid(alpha=0.3)
    return figure


def _grid(image_set: ImageSet, count: int = GRID_IMAGES) -> Image.Image:
    """The first samples in a square grid, enlarged (nearest neighbour) to about GRID_WIDTH_PX."""
    images = load_images(image_set.files[:count], image_set.resolution)
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    size = image_set.resolution
    canvas = Image.new("RGB", (columns * (size + 2), rows * (size + 2)), (255, 255, 255))
    for index, image in enumerate(images):
        canvas.paste(
            Image.fromarray(image), ((index % columns) * (size + 2), (index // columns) * (size + 2))
        )
    # the nearest whole factor, but never past the reports' 1024 px limit (which would blur it)
    factor = max(1, min(1024 // canvas.width, round(GRID_WIDTH_PX / canvas.width)))
    return canvas.resize((canvas.width * factor, canvas.height * factor), Image.Resampling.NEAREST)


def _provenance(config: EvalConfig, gen: ImageSet) -> dict[str, object] | None:
    """Which run made the generated images: the folder's provenance.json, or (``--run``) this eval's own
    sampling of the run; None for a folder of unknown origin, which the run pages then credit to no run."""
    record = read_provenance(gen.root)
    if record is None and config.run is not None:
        record = {
            "schema": PROVENANCE_SCHEMA, "command": "eval --run", "run": str(config.run),
            "snapshot": "latest EMA snapshot",
            "sampler": config.sampler, "steps": config.steps, "seed": config.seed, "n": config.samples,
        }  # fmt: skip
    return record


def build_report(
    config: EvalConfig,
    result: EvalResult,
    gen: ImageSet,
    ref: ImageSet | None,
    memo: MemorizationResult | None,
) -> ReportPaths:
    sections = [
        Section(heading="Metrics", table=_metric_rows(result), badges=_badges(result)),
        Section(heading="Caveats", table=[{"caveat": note} for note in result.caveats]),
    ]
    if result.fid_curve is not None:
        name = result.space.fd
        sections.append(
            Section(
                heading=f"{name} vs 1/N",
                figure=_curve_figure(result.fid_curve, not result.fid_infinity_problems, name),
                text=f"{name} grows roughly linearly in 1/N; the intercept is an estimate of the "
                f"{name} an infinite generated set would get against this reference.",
            )
        )
    sections.append(
        Section(heading="Generated samples", images=[ReportImage(_grid(gen), f"first {GRID_IMAGES}")])
    )
    if memo is not None and ref is not None:
        pairs = memo.closest_pairs()
        images = [
            ReportImage(
                pair_image(gen.files[g], ref.files[r], gen.resolution),
                f"{gen.files[g].name} | {ref.files[r].name}: RMS {memo.pixel.distances[g, 0]:.4f}, "
                f"NN1/NN2 {memo.ratio[g]:.2f}",
            )
            for g, r in pairs
        ]
        sections.append(
            Section(
                heading="Memorization: closest pairs (generated | nearest reference)",
                table=_key_values(result.memorization),
                images=images,
            )
        )
    provenance = _provenance(config, gen)  # the run pages credit this eval to the run it names, only
    made = made_by(provenance) if provenance else "images of unknown origin (no provenance.json)"
    setup = {
        "generated": result.generated,
        "generated_by": made,
        "reference": result.reference,
        "n_generated": result.n_generated,
        "n_reference": result.n_reference,
        "resolution": result.resolution,
        "engine": result.engine,
        "resize": result.resize,
        "bootstrap_replicates": config.bootstrap,
        "generated_sha256": gen.content_sha256,
        "reference_sha256": ref.content_sha256 if ref is not None else "(statistics file)",
        "features": result.features,
        **{f"seed_{k}": str(v) for k, v in result.seeds.items()},  # identifiers: no "2,020"
        **{f"weights_{k}_sha256": w["sha256"] for k, w in result.weights.items()},
    }
    sections.append(Section(heading="Setup", table=_key_values(setup)))
    sections.append(Section(heading="Versions", table=_key_values(library_versions())))
    summary = {
        "n_generated": result.n_generated,
        "n_reference": result.n_reference,
        "engine": result.engine,
        "weights": result.weights_status,
    }
    summary["features"] = result.features
    keys = ("fid", "fid_infinity", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall")
    for key in (*keys, "density", "coverage"):
        if getattr(result, key) is not None:
            untrusted = key == "fid_infinity" and result.fid_infinity_problems
            summary[f"{key}_untrusted" if untrusted else key] = getattr(result, key)
    data = {
        **result.to_dict(),
        "versions": library_versions(),
        "config": {
            "samples": config.samples,
            "metrics": list(config.metrics),
            "bootstrap": config.bootstrap,
            "features": config.features,
            "prc_k": config.prc_k,
            "batch_size": config.batch_size,
            "device": config.device,
            "sampler": config.sampler,
            "steps": config.steps,
            "run": str(config.run) if config.run is not None else None,  # links this report to its run
        },
    }
    data["provenance"] = provenance
    data["made_by"] = made
    report = Report(
        title=f"Eval {result.generated} vs {result.reference}",
        command="eval",
        summary=summary,
        sections=sections,
        data=data,
        headline=result.fid_headline() if result.fid is not None else "",
    )
    return write_report(report, config.report)
