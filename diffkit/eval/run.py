"""``diffkit eval``: FID / KID / IS / precision-recall / memorization with the caveats in numbers.

``evaluate(config) -> EvalResult`` resolves the two image sets, extracts features once per set (cached
by content), computes the asked metrics with torch-fidelity's arithmetic (:mod:`diffkit.metrics`), adds
the sample-size analysis and writes the HTML report with its JSON sidecar.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

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
from diffkit.metrics.fid import FastFrechet, frechet_distance
from diffkit.metrics.images import ImageSet, describe_set, image_size, select_images
from diffkit.metrics.inception_score import DEFAULT_SPLITS, inception_score
from diffkit.metrics.kid import kernel_distance, kid_bootstrap
from diffkit.metrics.prc import precision_recall
from diffkit.metrics.weights import CLEAN_FID_INCEPTION, TORCH_FIDELITY_INCEPTION, VGG16, resolve_weights

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
        if not folder.is_dir():
            raise DiffkitError(f"{role} folder {printable(folder)} does not exist")
    return generated, reference, reused


def _image_sets(config: EvalConfig, generated: Path, reference: Path) -> tuple[ImageSet, ImageSet]:
    hint = (
        "use --run to sample them, or lower --samples"
        if config.run is None
        else "delete the samples folder to sample again"
    )
    gen_files = select_images(generated, config.samples, "generated", hint)
    width, height = image_size(gen_files[0])
    resolution = min(width, height)
    ref_files = select_images(
        reference, config.reference_samples, "reference", "lower --reference-samples or add reference images"
    )
    return describe_set(generated, gen_files, resolution), describe_set(reference, ref_files, resolution)


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
    if config.write_report:
        from diffkit.report.render import DEFAULT_REPORTS_DIR

        folder = config.report.parent if config.report is not None else DEFAULT_REPORTS_DIR
        check_writable_dir(folder, "the report (--report)")
    return notes


def _input_caveats(config: EvalConfig, gen: ImageSet, ref: ImageSet, extractor: Extractor) -> list[str]:
    notes = [
        f"{ENGINE_NOTES[config.engine]}; torch-fidelity and clean-fid numbers differ on the same images "
        "(2-20%) and are not comparable."
    ]
    if not extractor.weights.official:
        notes.append(
            f"Inception weights {extractor.weights.path} (sha256 {extractor.weights.sha256[:16]}…) are "
            "not the official file: these numbers are not comparable with any published value."
        )
    if ref.n_lossy:
        notes.append(
            f"{ref.n_lossy} of {len(ref)} reference images are JPEG/WebP (lossy); compression artefacts "
            "shift FID against lossless generated PNGs (Parmar et al. 2022)."
        )
    if gen.n_lossy:
        notes.append(f"{gen.n_lossy} generated images are lossy-compressed; save samples as PNG.")
    if ref.resized:
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


def evaluate(config: EvalConfig) -> EvalResult:
    # First: a --device that is missing here fails in a second, before any image is read or sampled.
    device = resolve_device(config.device)
    output_notes = _check_outputs(config)  # before sampling (--run) and extraction: both take long
    timings: dict[str, float] = {}
    with _timed(timings, "inputs"):
        generated, reference, reused = _resolve_inputs(config)
        gen_set, ref_set = _image_sets(config, generated, reference)
    n, m = len(gen_set), len(ref_set)
    if "is" in config.metrics and n < DEFAULT_SPLITS:
        raise DiffkitError(f"the Inception Score needs at least {DEFAULT_SPLITS} generated images (got {n})")
    metrics = list(config.metrics)
    needs_inception = any(name in metrics for name in ("fid", "kid", "is", "memorization"))
    spec = TORCH_FIDELITY_INCEPTION if config.engine == "torch-fidelity" else CLEAN_FID_INCEPTION
    result = EvalResult(
        n,
        m,
        config.engine,
        "",
        metrics,
        printable(generated),  # JSON and HTML: a non-UTF-8 folder name shown as \xNN, not a lone surrogate
        printable(reference),
        gen_set.resolution,
        timings_s=timings,
        samples_reused=reused,
        caveats=output_notes,
    )
    result.seeds = {
        "sampling": config.seed,
        "bootstrap": config.seed + 1,
        "subsets": config.seed + 2,
        "kid_subsets": 2020,
        "is_shuffle": 2020,
    }

    inception = None
    if needs_inception:
        weights = resolve_weights(spec, config.weights)
        inception = build_inception(config.engine, weights, device)
        result.weights["inception"] = weights.to_dict()
        result.resize = inception.resize
        result.caveats += _input_caveats(config, gen_set, ref_set, inception)
        feats = _features(
            config, inception, {"generated": gen_set, "reference": ref_set}, result, "inception"
        )
        gen_pool, ref_pool = feats["generated"]["2048"], feats["reference"]["2048"]
    if "prc" in metrics:
        vgg_weights = resolve_weights(VGG16, config.vgg_weights)
        vgg = build_vgg16(vgg_weights, device)
        result.weights["vgg16"] = vgg_weights.to_dict()
        result.resize = result.resize or vgg.resize
        if not vgg_weights.official:
            result.caveats.append(
                f"VGG16 weights {vgg_weights.path} (sha256 {vgg_weights.sha256[:16]}…) are not the "
                "official file: precision/recall are not comparable with published values."
            )
        vfeats = _features(config, vgg, {"generated": gen_set, "reference": ref_set}, result, "vgg16")

    if "fid" in metrics:
        with _timed(timings, "fid"):
            result.fid = frechet_distance(gen_pool, ref_pool)
            result.fid_label = cav.fid_label(n, m)
            frechet = FastFrechet(ref_pool)
            interval = None
            if config.bootstrap:
                boot = cav.fid_bootstrap(gen_pool, frechet, config.bootstrap, config.seed + 1)
                interval = cav.percentile_interval(boot, centre=result.fid)
                result.fid_ci95 = list(interval)
            curve = cav.fid_curve(gen_pool, frechet, config.seed + 2) if n >= cav.MIN_CURVE_N else None
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
            result.caveats += cav.fid_caveats(n, m, interval, curve, result.fid)
            result.caveats += cav.bootstrap_caveats("FID", config.bootstrap, result.fid, interval)
    if "kid" in metrics:
        with _timed(timings, "kid"):
            size = cav.kid_subset_size(n, m)
            result.kid_subset_size, result.kid_subsets = size, config.kid_subsets
            result.kid_mean, result.kid_std, _ = kernel_distance(gen_pool, ref_pool, config.kid_subsets, size)
            interval = None
            if config.bootstrap:
                boot = kid_bootstrap(gen_pool, ref_pool, config.bootstrap, config.seed + 1, KID_BOOTSTRAP_MAX)
                interval = cav.percentile_interval(boot)
                result.kid_ci95 = list(interval)
            result.caveats += cav.kid_caveats(n, m, size, interval, KID_BOOTSTRAP_MAX)
            result.caveats += cav.bootstrap_caveats("KID", config.bootstrap, result.kid_mean, interval)
    if "is" in metrics:
        result.is_mean, result.is_std = inception_score(feats["generated"]["logits_unbiased"])
        result.is_splits = DEFAULT_SPLITS
        result.caveats += cav.is_caveats(n, DEFAULT_SPLITS)
    if "prc" in metrics:
        with _timed(timings, "prc"):
            result.precision, result.recall = precision_recall(
                vfeats["generated"]["fc2_relu"], vfeats["reference"]["fc2_relu"], config.prc_k
            )
        result.prc_k = config.prc_k
        result.caveats.append(
            f"Precision/recall (Kynkäänniemi et al. 2019) in VGG16 fc2 features, k={config.prc_k}, "
            f"N={n}, M={m}: both depend on N, M and k; compare only at equal values."
        )
    memo = None
    if "memorization" in metrics:
        from diffkit.metrics.memorization import check_memorization

        with _timed(timings, "memorization"):
            memo = check_memorization(
                gen_set.files, ref_set.files, gen_set.resolution, gen_pool, ref_pool, seed=config.seed
            )
        result.memorization = memo.summary()
        result.caveats.append(
            f"Memorization: {result.memorization['n_flagged']} of {n} generated images "
            f"({100 * result.memorization['share_flagged']:.1f}%) have a reference image much closer "
            f"than the second closest (pixel NN1/NN2 < 1/3 at {memo.pixel_resolution} px); checked "
            "against the reference set, which should be the training data."
        )
    if config.write_report:
        from diffkit.eval.report import build_report

        with _timed(timings, "report"):
            paths = build_report(config, result, gen_set, ref_set, memo)
        result.report_html, result.report_json = printable(paths.html), printable(paths.json)
    return result
