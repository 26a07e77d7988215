"""``diffkit eval``: FID / KID / IS / precision-recall-density-coverage / memorization, caveats in numbers.

``evaluate(config) -> EvalResult`` resolves the two image sets (or a reference statistics file),
extracts features once per set and network (cached by content), computes each asked metric in its own
helper with torch-fidelity's arithmetic (:mod:`diffkit.metrics`) in the chosen feature space
(``--features inception|dinov2``; IS is always Inception's), adds the sample-size analysis and writes
the HTML report with its JSON sidecar.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffkit.atomic import check_writable_dir
from diffkit.console import Bar, printable
from diffkit.device import resolve_device
from diffkit.errors import DiffkitError
from diffkit.eval.config import EvalConfig
from diffkit.eval.result import EvalResult
from diffkit.eval.sampling import ensure_samples, run_reference
from diffkit.metrics import caveats as cav
from diffkit.metrics.features import (
    DEFAULT_CACHE_DIR,
    Extractor,
    FeatureSet,
    build_inception,
    build_vgg16,
    default_cache_dir,
    extract_features,
)
from diffkit.metrics.fid import FastFrechet, frechet_distance, frechet_distance_to_stats
from diffkit.metrics.images import ImageSet, describe_set, image_size, select_images
from diffkit.metrics.inception_score import DEFAULT_SPLITS, inception_score
from diffkit.metrics.kid import kernel_distance, kid_bootstrap
from diffkit.metrics.prc import SENSITIVITY_K, manifold_scores
from diffkit.metrics.stats_file import (
    ReferenceStats,
    check_matches,
    is_stats_path,
    load_stats,
    save_stats,
    stats_caveats,
    unavailable_from_stats,
)
from diffkit.metrics.weights import (
    CLEAN_FID_INCEPTION,
    DINOV2_VITL14,
    TORCH_FIDELITY_INCEPTION,
    VGG16,
    resolve_weights,
)
from diffkit.report.render import format_value

KID_BOOTSTRAP_MAX = 4000
ENGINE_NOTES = {
    "torch-fidelity": "torch-fidelity engine: InceptionV3 2015-12-05 weights, "
    "TF1-compatible bilinear resize to 299 px",
    "clean-fid": "clean-fid engine: NVIDIA TorchScript InceptionV3 2015-12-05, "
    "'clean' PIL-bicubic resize to 299 px",
}


@contextmanager
def _timed(timings: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - start, 3)


def _resolve_inputs(config: EvalConfig) -> tuple[Path, Path, bool | None]:
    reused = None
    if config.run is not None:
        reference = config.reference or run_reference(config.run)
        generated, reused = ensure_samples(config)
    else:
        assert config.generated is not None and config.reference is not None
        generated, reference = config.generated, config.reference
    for role, folder in (("generated", generated), ("reference", reference)):
        if role == "reference" and is_stats_path(folder):
            continue  # a statistics file: read (and checked) in _reference_stats
        if not folder.is_dir():
            raise DiffkitError(f"{role} folder {printable(folder)} does not exist")
    return generated, reference, reused


def _image_sets(
    config: EvalConfig, generated: Path, reference: Path
) -> tuple[ImageSet, ImageSet | None, ReferenceStats | None]:
    """The generated set, and the reference as images or (``.npz``) as statistics."""
    hint = (
        "use --run to sample them, or lower --samples"
        if config.run is None
        else "delete the samples folder to sample again"
    )
    gen_files = select_images(generated, config.samples, "generated", hint)
    width, height = image_size(gen_files[0])
    resolution = min(width, height)
    gen_set = describe_set(generated, gen_files, resolution)
    if is_stats_path(reference):
        return gen_set, None, load_stats(reference)
    ref_files = select_images(
        reference, config.reference_samples, "reference", "lower --reference-samples or add reference images"
    )
    return gen_set, describe_set(reference, ref_files, resolution), None


def _advancer(bar: Bar) -> Callable[[int], None]:
    """The feature extractor's progress callback: it reports how many images it just did."""
    return lambda count: bar.update(advance=count)


def _features(
    config: EvalConfig,
    extractor: Extractor,
    sets: dict[str, ImageSet],
    result: EvalResult,
    tag: str,
) -> dict[str, FeatureSet]:
    cache_dir = _cache_dir(config)
    out = {}
    for role, image_set in sets.items():
        bar = Bar(f"{tag} features: {role}", total=len(image_set), enabled=config.progress)
        with bar, _timed(result.timings_s, f"features_{tag}"):
            feats = extract_features(
                image_set,
                extractor,
                batch_size=config.batch_size,
                cache_dir=cache_dir,
                progress=_advancer(bar),
            )
        result.feature_cache[f"{tag}_{role}"] = "hit" if feats.from_cache else "miss"
        result.features_extracted[f"{tag}_{role}"] = feats.n_extracted
        out[role] = feats
    return out


def _cache_dir(config: EvalConfig) -> Path | None:
    """The feature cache folder; None when the default one cannot be written (then nothing is cached)."""
    if config.cache_dir is not None:
        return config.cache_dir.expanduser()
    return default_cache_dir()


def _check_outputs(config: EvalConfig) -> list[str]:
    """Prove the cache and report folders writable before any feature is extracted; caveats to add."""
    notes = []
    if config.cache_dir is not None:
        check_writable_dir(config.cache_dir.expanduser(), "the feature cache (--cache-dir)")
    elif _cache_dir(config) is None:
        notes.append(
            f"The default feature cache {printable(DEFAULT_CACHE_DIR)} is not writable: features were "
            "not cached (pass --cache-dir DIR)."
        )
    if config.save_stats is not None:
        check_writable_dir(config.save_stats.parent, "the statistics file (--save-stats)")
    if config.write_report:
        from diffkit.report.render import DEFAULT_REPORTS_DIR

        folder = config.report.parent if config.report is not None else DEFAULT_REPORTS_DIR
        check_writable_dir(folder, "the report (--report)")
    return notes


def _input_caveats(config: EvalConfig, gen: ImageSet, ref: ImageSet | None) -> list[str]:
    """What the images themselves change about the numbers (formats, sizes, what the reference is)."""
    notes = []
    if ref is not None and ref.n_lossy:
        notes.append(
            f"{ref.n_lossy} of {len(ref)} reference images are JPEG/WebP (lossy); compression artefacts "
            "shift FID against lossless generated PNGs (Parmar et al. 2022)."
        )
    if gen.n_lossy:
        notes.append(f"{gen.n_lossy} generated images are lossy-compressed; save samples as PNG.")
    if ref is not None and ref.resized:
        sizes = ", ".join(sorted(ref.native_sizes)[:3])
        notes.append(
            f"Reference images ({sizes}) were centre-cropped and resized (Lanczos, as the training data) to "
            f"{ref.resolution} px, the generated resolution."
        )
    if len(gen.native_sizes) > 1:
        notes.append(
            f"Generated images have {len(gen.native_sizes)} different sizes; all were brought to "
            f"{gen.resolution} px."
        )
    if config.run is not None and config.reference is None:
        notes.append(
            "The reference is the run's training data: FID/KID against training data also reward "
            "memorization (see the memorization metric)."
        )
    return notes


def _weights_caveat(extractor: Extractor, network: str, metrics: str) -> list[str]:
    weights = extractor.weights
    if weights.official:
        return []
    if extractor.name.startswith("timm/") and DINOV2_VITL14.sha256 is None:
        return [
            f"{network} weights {printable(weights.path)} (sha256 {weights.sha256[:16]}…): diffkit has no "
            f"verified sha256 pin for Meta's file yet, so no {network} file counts as official; {metrics} "
            "are comparable only with evaluations that used the file with this sha256."
        ]
    return [
        f"{network} weights {printable(weights.path)} (sha256 {weights.sha256[:16]}…) are not the official "
        f"file: {metrics} are not comparable with any published value."
    ]


@dataclass
class _Features:
    """What the metrics read: the chosen space's features, and Inception's own (IS, memorization)."""

    gen: np.ndarray | None = None  # chosen space (fid, kid; prc too in DINOv2 space)
    ref: np.ndarray | None = None  # None when the reference is a statistics file
    prc_gen: np.ndarray | None = None  # VGG16 fc2 in Inception space, else the chosen space's
    prc_ref: np.ndarray | None = None
    logits: np.ndarray | None = None  # Inception's unbiased logits of the generated set (IS)
    gen_pool: np.ndarray | None = None  # Inception pool3 (memorization)
    ref_pool: np.ndarray | None = None


def _identity(extractor: Extractor, config: EvalConfig, resolution: int) -> dict[str, object]:
    """What a statistics file must share with this evaluation (stats_file.MATCHED_FIELDS)."""
    return {
        "features": config.features,
        "extractor": extractor.name,
        "resize": extractor.resize,
        "weights_sha256": extractor.weights.sha256,
        "resolution": resolution,
        "dims": cav.SPACES[config.features].dims,
    }


def _space_extractor(config: EvalConfig, device: torch.device, result: EvalResult) -> Extractor:
    """The DINOv2 network (Inception's is built by _inception_extractor)."""
    from diffkit.metrics.dinov2 import DinoV2Extractor

    weights = resolve_weights(DINOV2_VITL14, config.dinov2_weights)
    extractor = DinoV2Extractor(weights, device)
    result.weights["dinov2"] = weights.to_dict()
    result.caveats += _weights_caveat(
        extractor, "DINOv2 ViT-L/14", "FD_DINOv2, KD_DINOv2 and the k-NN metrics"
    )
    return extractor


def _inception_extractor(config: EvalConfig, device: torch.device, result: EvalResult) -> Extractor:
    spec = TORCH_FIDELITY_INCEPTION if config.engine == "torch-fidelity" else CLEAN_FID_INCEPTION
    weights = resolve_weights(spec, config.weights)
    extractor = build_inception(config.engine, weights, device)
    result.weights["inception"] = weights.to_dict()
    result.caveats.insert(
        0,
        f"{ENGINE_NOTES[config.engine]}; torch-fidelity and clean-fid numbers differ on the same images "
        "(2-20%) and are not comparable.",
    )
    result.caveats += _weights_caveat(extractor, "Inception", "these numbers")
    return extractor


def _networks(
    config: EvalConfig, device: torch.device, metrics: list[str], result: EvalResult
) -> dict[str, Extractor]:
    """Every network the asked metrics need, built (weights found and checked) before any extraction,
    so that a missing or refused file fails in seconds, not after the first network's pass."""
    inception_space = config.features == "inception"
    needs_space = "fid" in metrics or "kid" in metrics or config.save_stats is not None
    needs_space = needs_space or (not inception_space and "prc" in metrics)
    networks: dict[str, Extractor] = {}
    if "is" in metrics or "memorization" in metrics or (inception_space and needs_space):
        networks["inception"] = _inception_extractor(config, device, result)
    if needs_space and not inception_space:
        networks["dinov2"] = _space_extractor(config, device, result)
    if "prc" in metrics and inception_space:
        vgg_weights = resolve_weights(VGG16, config.vgg_weights)
        networks["vgg16"] = build_vgg16(vgg_weights, device)
        result.weights["vgg16"] = vgg_weights.to_dict()
        result.caveats += _weights_caveat(networks["vgg16"], "VGG16", "precision/recall/density/coverage")
    space = networks.get("dinov2" if config.features == "dinov2" else "inception")
    if space is not None and needs_space:
        result.feature_space = _identity(space, config, result.resolution)
        result.resize = space.resize
    else:
        result.resize = next((network.resize for network in networks.values()), "")
    return networks


def _extract(
    config: EvalConfig,
    networks: dict[str, Extractor],
    metrics: list[str],
    sets: dict[str, ImageSet],
    result: EvalResult,
) -> _Features:
    """One pass per network over the sets it is needed for."""
    feats = _Features()
    inception_space = config.features == "inception"
    if "inception" in networks:
        # the reference too when its pool3 features are the chosen space's or memorization needs them
        both = "memorization" in metrics or (inception_space and result.feature_space is not None)
        wanted = sets if both else {"generated": sets["generated"]}
        out = _features(config, networks["inception"], wanted, result, "inception")
        feats.logits, feats.gen_pool = out["generated"]["logits_unbiased"], out["generated"]["2048"]
        feats.ref_pool = out["reference"]["2048"] if "reference" in out else None
        if inception_space:
            feats.gen, feats.ref = feats.gen_pool, feats.ref_pool
    if "dinov2" in networks:
        out = _features(config, networks["dinov2"], sets, result, "dinov2")
        feats.gen = out["generated"]["dinov2"]
        feats.ref = out["reference"]["dinov2"] if "reference" in out else None
    if "vgg16" in networks:
        out = _features(config, networks["vgg16"], sets, result, "vgg16")
        feats.prc_gen, feats.prc_ref = out["generated"]["fc2_relu"], out["reference"]["fc2_relu"]
    elif "prc" in metrics:
        feats.prc_gen, feats.prc_ref = feats.gen, feats.ref
    return feats


def _save_reference_stats(
    config: EvalConfig, feats: _Features, ref_set: ImageSet, result: EvalResult
) -> None:
    import importlib.metadata

    assert config.save_stats is not None and feats.ref is not None
    identity = dict(result.feature_space)
    space_weights = result.weights["dinov2" if config.features == "dinov2" else "inception"]
    meta = {
        **identity,
        "weights_official": space_weights["official"],
        "preparation": f"RGB, EXIF orientation, centre square crop, Lanczos to {ref_set.resolution} px "
        f"(uint8); then {identity['resize']}",
        "reference": printable(ref_set.root),
        "reference_sha256": ref_set.content_sha256,
        "diffkit_version": importlib.metadata.version("diffkit"),
    }
    save_stats(config.save_stats, feats.ref, meta)
    result.stats_saved = printable(config.save_stats)


def _fid(config: EvalConfig, result: EvalResult, feats: _Features, ref_stats: ReferenceStats | None) -> None:
    assert feats.gen is not None
    n, m = result.n_generated, result.n_reference or None
    if ref_stats is not None:
        frechet = FastFrechet.from_stats(ref_stats.stats)
        result.fid = frechet_distance_to_stats(feats.gen, ref_stats.stats, frechet)
    else:
        assert feats.ref is not None
        frechet = FastFrechet(feats.ref)
        result.fid = frechet_distance(feats.gen, feats.ref, frechet)
    result.fid_label = cav.fid_label(n, m, config.features)
    interval, clipped = None, False
    if config.bootstrap:
        boot = cav.fid_bootstrap(feats.gen, frechet, config.bootstrap, config.seed + 1)
        interval, clipped = cav.clip_to_range(cav.percentile_interval(boot, centre=result.fid))
        result.fid_ci95, result.fid_ci95_clipped = list(interval), clipped
    curve = cav.fid_curve(feats.gen, frechet, config.seed + 2) if n >= cav.MIN_CURVE_N else None
    if curve is not None:
        result.fid_infinity = curve.intercept
        result.fid_curve = {
            "sizes": curve.sizes,
            "fids": curve.fids,
            "slope": curve.slope,
            "intercept": curve.intercept,
            "r2": curve.r2,
        }
        result.fid_infinity_problems = curve.problems()
    result.caveats += cav.fid_caveats(n, m, interval, curve, result.fid, config.features, clipped)
    result.caveats += cav.bootstrap_caveats(result.space.fd, config.bootstrap, result.fid, interval)


def _kid(config: EvalConfig, result: EvalResult, feats: _Features, ref_stats: ReferenceStats | None) -> None:
    assert feats.gen is not None and feats.ref is not None
    n, m = result.n_generated, result.n_reference
    size = cav.kid_subset_size(n, m)
    result.kid_subset_size, result.kid_subsets = size, config.kid_subsets
    result.kid_mean, result.kid_std, _ = kernel_distance(feats.gen, feats.ref, config.kid_subsets, size)
    interval = None
    if config.bootstrap:
        boot = kid_bootstrap(feats.gen, feats.ref, config.bootstrap, config.seed + 1, KID_BOOTSTRAP_MAX)
        interval = cav.percentile_interval(boot)
        result.kid_ci95 = list(interval)
    result.caveats += cav.kid_caveats(n, m, size, interval, KID_BOOTSTRAP_MAX, config.features)
    result.caveats += cav.bootstrap_caveats(result.space.kd, config.bootstrap, result.kid_mean, interval)


def _is(config: EvalConfig, result: EvalResult, feats: _Features, ref_stats: ReferenceStats | None) -> None:
    assert feats.logits is not None
    result.is_mean, result.is_std = inception_score(feats.logits)
    result.is_splits = DEFAULT_SPLITS
    result.caveats += cav.is_caveats(result.n_generated, DEFAULT_SPLITS)


def _prc(config: EvalConfig, result: EvalResult, feats: _Features, ref_stats: ReferenceStats | None) -> None:
    """Precision, recall, density and coverage at the chosen k, and at k = 3 and 5 beside it."""
    assert feats.prc_gen is not None and feats.prc_ref is not None
    n, m, k = result.n_generated, result.n_reference, config.prc_k
    if min(n, m) <= k:
        raise DiffkitError(f"precision/recall with k={k} needs more than {k} images per set (N={n}, M={m})")
    ks = tuple(sorted(j for j in {k, *SENSITIVITY_K} if j < min(n, m)))
    scores = manifold_scores(feats.prc_gen, feats.prc_ref, ks)
    main = scores[k]
    result.precision, result.recall = main.precision, main.recall
    result.density, result.coverage = main.density, main.coverage
    result.prc_k, result.prc_by_k = k, {str(j): scores[j].to_dict() for j in ks}
    result.prc_network = "VGG16 fc2" if config.features == "inception" else result.space.network
    result.caveats.append(
        f"Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020) in "
        f"{result.prc_network} features, k={k}, N={n}, M={m}: all depend on N, M and k; compare only at "
        "equal values. Density is not bounded by 1 (about 1 when generated samples crowd the reference "
        "balls as densely as reference samples do)."
    )
    if len(ks) > 1:
        low, high = scores[ks[0]], scores[ks[-1]]
        moved = ", ".join(
            f"{name} {format_value(getattr(low, name))} → {format_value(getattr(high, name))}"
            for name in ("precision", "recall", "density", "coverage")
        )
        result.caveats.append(
            f"k sensitivity at N={n}, M={m}, k={ks[0]} → {ks[-1]}: {moved}; at small N the k-NN radii, and "
            "so these values, move with k: quote k with them."
        )
    skipped = sorted(set(SENSITIVITY_K) - set(ks))
    if skipped:
        result.caveats.append(f"k={', '.join(map(str, skipped))} not computed: it needs more images per set.")


def _memorization(config: EvalConfig, result: EvalResult, feats: _Features, sets: dict[str, ImageSet]):
    from diffkit.metrics.memorization import check_memorization

    gen_set, ref_set = sets["generated"], sets["reference"]
    memo = check_memorization(
        gen_set.files, ref_set.files, gen_set.resolution, feats.gen_pool, feats.ref_pool, seed=config.seed
    )
    result.memorization = memo.summary()
    result.caveats.append(
        f"Memorization: {result.memorization['n_flagged']} of {result.n_generated} generated images "
        f"({100 * result.memorization['share_flagged']:.1f}%) have a reference image much closer "
        f"than the second closest (pixel NN1/NN2 < 1/3 at {memo.pixel_resolution} px); checked "
        "against the reference set, which should be the training data."
    )
    return memo


def _metrics(
    config: EvalConfig, n: int, ref_stats: ReferenceStats | None
) -> tuple[list[str], dict[str, str]]:
    """The metrics that can be computed here, and why the others cannot (a statistics reference)."""
    if "is" in config.metrics and n < DEFAULT_SPLITS:
        raise DiffkitError(f"the Inception Score needs at least {DEFAULT_SPLITS} generated images (got {n})")
    unavailable = unavailable_from_stats(config.metrics) if ref_stats is not None else {}
    metrics = [name for name in config.metrics if name not in unavailable]
    if not metrics:
        raise DiffkitError(
            f"--reference {printable(config.reference)} is a statistics file, which gives FID (and IS, from "
            f"the generated images) only: {'; '.join(unavailable.values())}; pass the reference images"
        )
    return metrics, unavailable


METRIC_NAMES = {"kid": "KID", "prc": "Precision/recall/density/coverage", "memorization": "Memorization"}
METRIC_HELPERS = (("fid", _fid), ("kid", _kid), ("is", _is), ("prc", _prc))


def evaluate(config: EvalConfig) -> EvalResult:
    # First: a --device that is missing here fails in a second, before any image is read or sampled.
    device = resolve_device(config.device)
    output_notes = _check_outputs(config)  # before sampling (--run) and extraction: both take long
    timings: dict[str, float] = {}
    with _timed(timings, "inputs"):
        generated, reference, reused = _resolve_inputs(config)
        gen_set, ref_set, ref_stats = _image_sets(config, generated, reference)
    sets = {"generated": gen_set, **({"reference": ref_set} if ref_set is not None else {})}
    metrics, unavailable = _metrics(config, len(gen_set), ref_stats)
    n_reference = len(ref_set) if ref_set is not None else (ref_stats.n or 0 if ref_stats else 0)
    result = EvalResult(
        len(gen_set),
        n_reference,
        config.engine,
        "",
        metrics,
        printable(generated),  # JSON and HTML: a non-UTF-8 folder name shown as \xNN, not a lone surrogate
        printable(reference),
        gen_set.resolution,
        features=config.features,
        timings_s=timings,
        samples_reused=reused,
        caveats=output_notes,
        unavailable=unavailable,
    )
    result.seeds = {
        "sampling": config.seed,
        "bootstrap": config.seed + 1,
        "subsets": config.seed + 2,
        "kid_subsets": 2020,
        "is_shuffle": 2020,
    }
    result.caveats += _input_caveats(config, gen_set, ref_set)
    if ref_stats is not None:
        result.reference_stats = {"path": printable(ref_stats.path), "source": ref_stats.source}
        result.reference_stats.update(ref_stats.meta or {})
        result.caveats += stats_caveats(ref_stats, len(gen_set))
        result.caveats += [
            f"{METRIC_NAMES[name]} not computed: {why}; pass the reference images for it."
            for name, why in unavailable.items()
        ]
    networks = _networks(config, device, metrics, result)
    if ref_stats is not None and result.feature_space is not None:
        check_matches(ref_stats, result.feature_space)  # before any feature is extracted
    feats = _extract(config, networks, metrics, sets, result)
    if config.save_stats is not None and ref_set is not None:
        _save_reference_stats(config, feats, ref_set, result)
    for name, helper in METRIC_HELPERS:
        if name in metrics:
            with _timed(timings, name):
                helper(config, result, feats, ref_stats)
    memo = None
    if "memorization" in metrics:
        with _timed(timings, "memorization"):
            memo = _memorization(config, result, feats, sets)
    if config.write_report:
        from diffkit.eval.report import build_report

        with _timed(timings, "report"):
            paths = build_report(config, result, gen_set, ref_set, memo)
        result.report_html, result.report_json = printable(paths.html), printable(paths.json)
    return result
