"""Wall time of ``diffkit eval`` vs calling torch-fidelity directly, on the same folders and weights.

Three rounds in one process: two cold runs (nothing cached; both orders, as the load drifts) and a
re-run of the same folders (diffkit's content-keyed feature cache vs torch-fidelity's name-keyed
cache via ``input{1,2}_cache_name``).
Both compute FID, KID and IS; diffkit also computes its bootstrap intervals and the FID-vs-1/N
curve. The Inception weights are GENERATED (random, Kaiming init + BatchNorm calibration), because
the official file cannot be downloaded here: speed is identical, the metric values are not
meaningful beyond "both tools agree".

Two more sections, each alternating the tools within >= 3 rounds: the cached re-run's N-dependent step
at N >= 2048 (the FID of two 2048-d feature sets of ``--big-n`` samples: diffkit's symmetric form vs
torch-fidelity's ``fid_statistics_to_metric``, from the same statistics), and the Inception
extraction alone (diffkit's ``extract_features`` without cache vs torch-fidelity's
``extract_featuresdict_from_input_id`` on the same folder, same network and weights).

    .venv/bin/python -m benchmarks.bench_eval [--quick] [--n 64] [--m 64] [--big-n 2100] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from diffkit.eval.config import EvalConfig
from diffkit.eval.run import evaluate
from diffkit.fakesite.faces import write_face_folder
from diffkit.metrics.features import build_inception, extract_features
from diffkit.metrics.fid import feature_statistics, frechet_distance_from_stats
from diffkit.metrics.images import describe_set, select_images
from diffkit.metrics.weights import ResolvedWeights, file_sha256
from diffkit.report.model import Report, Section
from diffkit.report.render import write_report
from diffkit.testing.inception import make_inception_weights


def run_diffkit(gen: Path, ref: Path, n: int, weights: Path, cache: Path, report: Path) -> tuple[float, dict]:
    config = EvalConfig(
        samples=n,
        metrics=("fid", "kid", "is"),
        generated=gen,
        reference=ref,
        weights=weights,
        cache_dir=cache,
        report=report,
        progress=False,
        device="cpu",
    )
    start = time.perf_counter()
    result = evaluate(config)
    return time.perf_counter() - start, result.to_dict()


# The peer protocol: torch-fidelity (0.4) at its defaults (``torch_fidelity.defaults.DEFAULTS``; e.g.
# save_cpu_ram False, batch_size 64, samples_shuffle True, rng_seed 2020), but for these options, each with
# its reason; the report lists them.
TORCH_FIDELITY_NON_DEFAULTS = {
    "isc / fid / kid": "True: the three metrics compared (each is off unless asked for)",
    "cuda": "False: the benchmark measures CPU time",
    "feature_extractor_weights_path": "the generated weights diffkit also reads (no download here)",
    "kid_subset_size": "min(1000, N): its default 1000 needs N >= 1000",
    "verbose": "False: no progress output in a timed call",
    "input1_cache_name / input2_cache_name": "set in every round, so that the cold rounds write the "
    "feature cache the re-run reads (diffkit's cold runs write theirs too); a folder input is cached only "
    "under a name",
    "cache_root": "a fresh folder of the benchmark's own, emptied before each cold round (the default is a "
    "folder in the user's home, which could hold an earlier run's cache); cache stays at its default, True",
    "extraction section": "create_feature_extractor('inception-v3-compat', ['2048', 'logits_unbiased']) and "
    "extract_featuresdict_from_input_id with cuda=False, verbose=False and the same weights path; "
    "its other options at their defaults",
}


def run_torch_fidelity(
    gen: Path, ref: Path, n: int, weights: Path, cache: Path, names: bool
) -> tuple[float, dict]:
    import torch_fidelity

    start = time.perf_counter()
    metrics = torch_fidelity.calculate_metrics(
        input1=str(gen), input2=str(ref), cuda=False, isc=True, fid=True, kid=True,
        kid_subset_size=min(1000, n), feature_extractor_weights_path=str(weights), verbose=False,
        cache=names, cache_root=str(cache),
        input1_cache_name="bench-gen" if names else None, input2_cache_name="bench-ref" if names else None,
    )  # fmt: skip
    return time.perf_counter() - start, metrics


def big_n_statistics(n: int, rounds: int) -> dict:
    """FID from statistics at N >= 2048 (the cached re-run's only N-dependent step), both tools."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((2048, 2048)) / 40  # correlated features, like Inception's
    sets = [np.maximum(rng.standard_normal((n, 2048)) @ mixing + shift, 0) for shift in (0.0, 0.05)]
    stats = [feature_statistics(features) for features in sets]
    tf_stats = [{"mu": s.mu, "sigma": s.sigma} for s in stats]
    times: dict[str, list[float]] = {"diffkit": [], "torch-fidelity": []}
    values: dict[str, float] = {}
    for index in range(rounds):
        order = ("diffkit", "torch-fidelity") if index % 2 == 0 else ("torch-fidelity", "diffkit")
        for tool in order:
            start = time.perf_counter()
            if tool == "diffkit":
                values[tool] = frechet_distance_from_stats(*stats)
            else:
                values[tool] = fid_statistics_to_metric(*tf_stats, verbose=False)[
                    "frechet_inception_distance"
                ]
            times[tool].append(time.perf_counter() - start)
    ratios = [d / t for d, t in zip(times["diffkit"], times["torch-fidelity"], strict=True)]
    return {"n": n, "dims": 2048, "rounds": rounds,
            "diffkit_s": round(statistics.median(times["diffkit"]), 3),
            "torch_fidelity_s": round(statistics.median(times["torch-fidelity"]), 3),
            "ratio_median": round(statistics.median(ratios), 4), "ratio_min": round(min(ratios), 4),
            "ratio_max": round(max(ratios), 4), "diffkit_fid": values["diffkit"],
            "tf_fid": values["torch-fidelity"],
            "fid_relative_difference": abs(values["diffkit"] - values["torch-fidelity"])
            / abs(values["torch-fidelity"])}  # fmt: skip


def extraction_only(folder: Path, n: int, weights: Path, rounds: int) -> dict:
    """The Inception pass alone, same network and weights, alternating tools; features compared."""
    import torch
    from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id

    resolved = ResolvedWeights(path=weights, sha256=file_sha256(weights), source="option", official=False)
    ours = build_inception("torch-fidelity", resolved, torch.device("cpu"))
    theirs = create_feature_extractor("inception-v3-compat", ["2048", "logits_unbiased"], cuda=False,
                                      verbose=False, feature_extractor_weights_path=str(weights))  # fmt: skip
    image_set = describe_set(folder, select_images(folder, n, "generated"), 64)
    times: dict[str, list[float]] = {"diffkit": [], "torch-fidelity": []}
    features: dict[str, np.ndarray] = {}
    for index in range(rounds):
        order = ("diffkit", "torch-fidelity") if index % 2 == 0 else ("torch-fidelity", "diffkit")
        for tool in order:
            start = time.perf_counter()
            if tool == "diffkit":
                features[tool] = extract_features(image_set, ours, cache_dir=None)["2048"]
            else:
                found = extract_featuresdict_from_input_id(1, theirs, input1=str(folder), cuda=False,
                                                           verbose=False)  # fmt: skip
                features[tool] = found["2048"].numpy()
            times[tool].append(time.perf_counter() - start)
    ratios = [d / t for d, t in zip(times["diffkit"], times["torch-fidelity"], strict=True)]
    difference = float(np.abs(np.sort(features["diffkit"], 0) - np.sort(features["torch-fidelity"], 0)).max())
    return {"images": len(image_set), "rounds": rounds, "torch_threads": torch.get_num_threads(),
            "diffkit_s": round(statistics.median(times["diffkit"]), 2),
            "torch_fidelity_s": round(statistics.median(times["torch-fidelity"]), 2),
            "ratio_median": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3), "max_abs_feature_difference_sorted": difference}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 generated vs 32 reference images")
    parser.add_argument("--n", type=int, default=64, help="generated images")
    parser.add_argument("--m", type=int, default=64, help="reference images")
    parser.add_argument("--big-n", type=int, default=2100, help="samples per set for the N >= 2048 case")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the big-N and extraction sections")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_eval.html"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for both tools")
    args = parser.parse_args()
    import torch

    # One thread by default: on a shared 2-core machine two OpenMP threads mostly spin-wait for each
    # other (a tiny U-Net's forward took 50x the CPU time with two threads at a load of 7). Both tools
    # run in this process, so both get the same.
    torch.set_num_threads(args.threads)
    n, m = (32, 32) if args.quick else (args.n, args.m)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    try:
        gen_files = write_face_folder(work / "generated", n, size=64, seed=1)
        write_face_folder(work / "reference", m, size=64, seed=2)
        calibration = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in gen_files[:8]])
        weights = work / "inception-generated.pth"
        make_inception_weights(weights, calibration)
        rows, values = [], {}
        # two cold rounds in both orders (the machine's load drifts), then a re-run on warm caches
        rounds = (
            ("cold, diffkit first", True),
            ("cold, torch-fidelity first", False),
            ("cached re-run", True),
        )
        for round_name, diffkit_first in rounds:
            if round_name.startswith("cold"):
                shutil.rmtree(work / "dk-cache", ignore_errors=True)
                shutil.rmtree(work / "tf-cache", ignore_errors=True)
            timed = {}
            for tool in ("diffkit", "tf") if diffkit_first else ("tf", "diffkit"):
                if tool == "diffkit":
                    timed[tool] = run_diffkit(work / "generated", work / "reference", n, weights,
                                              work / "dk-cache", work / "dk-report.html")  # fmt: skip
                else:
                    timed[tool] = run_torch_fidelity(work / "generated", work / "reference", n, weights,
                                                     work / "tf-cache", names=True)  # fmt: skip
            (d_time, ours), (t_time, theirs) = timed["diffkit"], timed["tf"]
            rows.append({"round": round_name, "diffkit_s": round(d_time, 2),
                         "torch_fidelity_s": round(t_time, 2),
                         "ratio_diffkit_over_tf": round(d_time / t_time, 3),
                         "diffkit_extracted": sum(ours["features_extracted"].values())})  # fmt: skip
            values[round_name] = {"diffkit_fid": ours["fid"], "tf_fid": theirs["frechet_inception_distance"],
                                  "diffkit_kid": ours["kid_mean"],
                                  "tf_kid": theirs["kernel_inception_distance_mean"],
                                  "diffkit_is": ours["is_mean"], "tf_is": theirs["inception_score_mean"],
                                  "diffkit_timings_s": ours["timings_s"]}  # fmt: skip
            print(rows[-1], flush=True)
        extraction = extraction_only(work / "generated", n, weights, args.rounds)
        print("extraction only:", extraction, flush=True)
        big = big_n_statistics(args.big_n, args.rounds)
        print("N >= 2048 statistics:", big, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cold = values["cold, diffkit first"]
    fid_rel = abs(cold["diffkit_fid"] - cold["tf_fid"]) / abs(cold["tf_fid"])
    cold_dk = (rows[0]["diffkit_s"] + rows[1]["diffkit_s"]) / 2
    cold_tf = (rows[0]["torch_fidelity_s"] + rows[1]["torch_fidelity_s"]) / 2
    summary = {"n_generated": n, "n_reference": m, "cold_diffkit_s": round(cold_dk, 2),
               "cold_torch_fidelity_s": round(cold_tf, 2), "cold_ratio": round(cold_dk / cold_tf, 3),
               "rerun_diffkit_s": rows[2]["diffkit_s"], "rerun_torch_fidelity_s": rows[2]["torch_fidelity_s"],
               "rerun_ratio": rows[2]["ratio_diffkit_over_tf"], "fid_relative_difference": fid_rel,
               "weights": "generated (random, BN-calibrated), not the official file",
               "torch_fidelity_non_defaults": TORCH_FIDELITY_NON_DEFAULTS,
               "big_n": big["n"], "big_n_diffkit_s": big["diffkit_s"],
               "big_n_torch_fidelity_s": big["torch_fidelity_s"], "big_n_ratio": big["ratio_median"],
               "big_n_fid_relative_difference": big["fid_relative_difference"],
               "extraction_diffkit_s": extraction["diffkit_s"],
               "extraction_torch_fidelity_s": extraction["torch_fidelity_s"],
               "extraction_ratio": extraction["ratio_median"],
               "torch_threads": torch.get_num_threads(),
               "load_avg_before": [round(v, 2) for v in load_before],
               "load_avg_after": [round(v, 2) for v in os.getloadavg()]}  # fmt: skip
    report = Report(
        title=f"bench_eval: diffkit eval vs torch-fidelity ({n} vs {m} images, CPU)", command="bench_eval",
        summary=summary,
        sections=[Section(heading="Wall time (s)", table=rows,
                          text="Same process, same folders, same generated weights; torch-fidelity's re-run "
                               "uses input1/input2_cache_name. diffkit also computes bootstrap intervals."),
                  Section(heading="Metric agreement", table=[{"round": k, **v} for k, v in values.items()]),
                  Section(heading=f"Cached re-run's FID step at N = {big['n']} (2048-d), median of rounds",
                          table=[big],
                          text="torch-fidelity solves the non-symmetric eigenproblem of sigma1 sigma2; "
                               "diffkit takes tr sqrt(S1 S2) from symmetric problems (Cholesky, eigvalsh)."),
                  Section(heading="Inception extraction alone (no cache), median of rounds",
                          table=[extraction],
                          text="Same network class and weights; the feature difference is the largest "
                               "absolute difference after sorting each column (file order may differ)."),
                  Section(heading="torch-fidelity's options: its defaults but for these",
                          table=[{"option": k, "set to, and why": v}
                                 for k, v in TORCH_FIDELITY_NON_DEFAULTS.items()],
                          text="The peer protocol (docs/benchmarks.md): every non-default option, with its "
                               "reason. save_cpu_ram is at its default (False) since this run.")],
        data={"rows": rows, "values": values, "summary": summary, "big_n": big, "extraction": extraction},
    )  # fmt: skip
    paths = write_report(report, args.out)
    print(f"wrote {paths.html} and {paths.json}")


if __name__ == "__main__":
    main()
