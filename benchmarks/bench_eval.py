"""Wall time of ``diffkit eval`` vs calling torch-fidelity directly, on the same folders and weights.

Three rounds in one process: two cold runs (nothing cached; both orders, as the load drifts) and a
re-run of the same folders (diffkit's content-keyed feature cache vs torch-fidelity's name-keyed
cache via ``input{1,2}_cache_name``).
Both compute FID, KID and IS; diffkit also computes its bootstrap intervals and the FID-vs-1/N
curve. The Inception weights are GENERATED (random, Kaiming init + BatchNorm calibration), because
the official file cannot be downloaded here: speed is identical, the metric values are not
meaningful beyond "both tools agree".

    .venv/bin/python benchmarks/bench_eval.py [--quick] [--n 64] [--m 64]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from diffkit.eval import EvalConfig, evaluate
from diffkit.fakesite.faces import write_face_folder
from diffkit.report import Report, Section, write_report
from diffkit.testing.inception import make_inception_weights


def run_diffkit(gen: Path, ref: Path, n: int, weights: Path, cache: Path, report: Path) -> tuple[float, dict]:
    config = EvalConfig(samples=n, metrics=("fid", "kid", "is"), generated=gen, reference=ref,
                        weights=weights, cache_dir=cache, report=report, progress=False, device="cpu")
    start = time.perf_counter()
    result = evaluate(config)
    return time.perf_counter() - start, result.to_dict()


def run_torch_fidelity(gen: Path, ref: Path, n: int, weights: Path, cache: Path, names: bool
                       ) -> tuple[float, dict]:
    import torch_fidelity

    start = time.perf_counter()
    metrics = torch_fidelity.calculate_metrics(
        input1=str(gen), input2=str(ref), cuda=False, isc=True, fid=True, kid=True,
        kid_subset_size=min(1000, n), feature_extractor_weights_path=str(weights), verbose=False,
        cache=names, cache_root=str(cache), save_cpu_ram=True,
        input1_cache_name="bench-gen" if names else None, input2_cache_name="bench-ref" if names else None,
    )  # fmt: skip
    return time.perf_counter() - start, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 generated vs 32 reference images")
    parser.add_argument("--n", type=int, default=64, help="generated images")
    parser.add_argument("--m", type=int, default=64, help="reference images")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_eval.html"))
    args = parser.parse_args()
    n, m = (32, 32) if args.quick else (args.n, args.m)
    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    try:
        gen_files = write_face_folder(work / "generated", n, size=64, seed=1)
        write_face_folder(work / "reference", m, size=64, seed=2)
        calibration = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in gen_files[:8]])
        weights = work / "inception-generated.pth"
        make_inception_weights(weights, calibration)
        rows, values = [], {}
        # two cold rounds in both orders (the machine's load drifts), then a re-run on warm caches
        rounds = (("cold, diffkit first", True), ("cold, torch-fidelity first", False),
                  ("cached re-run", True))
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
               "weights": "generated (random, BN-calibrated), not the official file"}  # fmt: skip
    report = Report(
        title=f"bench_eval: diffkit eval vs torch-fidelity ({n} vs {m} images, CPU)", command="bench_eval",
        summary=summary,
        sections=[Section(heading="Wall time (s)", table=rows,
                          text="Same process, same folders, same generated weights; torch-fidelity's re-run "
                               "uses input1/input2_cache_name. diffkit also computes bootstrap intervals."),
                  Section(heading="Metric agreement", table=[{"round": k, **v} for k, v in values.items()])],
        data={"rows": rows, "values": values, "summary": summary},
    )  # fmt: skip
    paths = write_report(report, args.out)
    print(f"wrote {paths.html} and {paths.json}")


if __name__ == "__main__":
    main()
