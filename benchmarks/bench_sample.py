"""Sample quality vs steps: DDPM-1000 (the reference) vs DDIM 10/20/50 and DPM-Solver++ 10/20.

One tiny model is trained inside the benchmark (procedural faces at 8 px, CPU), or ``--run`` reuses a
run folder. Every sampler draws the same N images (image i from noise seeded by (seed, i)); quality
is the Fréchet distance to N held-out faces (faces the model never saw) in a FIXED OFFLINE FEATURE
SPACE: the pixels, 2x2-average-pooled to 4x4 RGB (48 dimensions). Why pixels and not Inception: no
official Inception weights can be downloaded here, a random network's features measure nothing in
particular, and at 8 px the pixels are nearly the whole image. Why pooled: the covariance needs N
well above the dimension, and N is small because DDPM-1000 costs 1000 forward passes per image on a
shared 2-core CPU. The same N for every sampler keeps the finite-N bias equal, so the distances
compare with each other (their absolute level does not transfer to Inception FID).

Speed: seconds per image on CPU, each sampler timed on the same batch in >= 3 rounds whose order
alternates (the machine is shared and its load drifts), median and spread reported with the load
average before and after. The question answered: how many steps does each fast sampler need to come
within 5 % of DDPM-1000's distance. The denoising animation is encoded in all three formats once, to
back the GIF choice in docs/sample.md.

    .venv/bin/python -m benchmarks.bench_sample [--quick] [--run RUN] [--n 256]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diffkit.fakesite.faces import write_face_folder
from diffkit.metrics.fid import frechet_distance
from diffkit.report.model import Report, Section
from diffkit.report.render import write_report
from diffkit.sample.animation import encode_animation
from diffkit.sample.generate import generate
from diffkit.train.cache import load_image_dataset
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

CONTENDERS = [("ddpm", 1000), ("ddim", 10), ("ddim", 20), ("ddim", 50), ("dpmpp", 10), ("dpmpp", 20)]
RES = 8
WITHIN = 0.05


def features(images: np.ndarray) -> np.ndarray:
    """NHWC uint8 at 8 px -> 2x2-average-pooled pixels in [0, 1], 48 per image."""
    x = images.astype(np.float64) / 255.0
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)).reshape(n, -1)


def train_model(work: Path, n_train: int, steps: int) -> Path:
    write_face_folder(work / "train", n_train, size=32, seed=0)
    config = TrainConfig(data=work / "train", out=work / "run", preset="tiny", resolution=RES, batch_size=32,
                         steps=steps, lr=1e-3, warmup_kimg=1.0, ema_halflife_kimg=2.0, seed=0, device="cpu",
                         precision="fp32", progress=False, report=False, sample_every_kimg=0.0,
                         sample_grid=16, sample_steps=20)  # fmt: skip
    started = time.perf_counter()
    train(config)
    print(f"trained {steps} steps in {time.perf_counter() - started:.0f} s", flush=True)
    return work / "run"


def draw(run: Path, sampler: str, steps: int, n: int, batch: int, record: int = 0):  # noqa: ANN201
    return generate(run, n, sampler=sampler, steps=steps, seed=0, batch_size=batch, device="cpu",
                    precision="fp32", progress=False, record=record)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short training, 64 images, 1 timing round")
    parser.add_argument("--run", type=Path, help="reuse this run folder instead of training one")
    parser.add_argument("--n", type=int, default=128, help="generated and held-out images")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timing-batch", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_sample.html"))
    args = parser.parse_args()
    n, train_steps, rounds = (64, 150, 1) if args.quick else (args.n, args.train_steps, args.rounds)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-sample-"))
    try:
        run = args.run or train_model(work, args.train_images, train_steps)
        run_config = json.loads((run / "config.json").read_text())["train"]
        write_face_folder(work / "held-out", n, size=32, seed=99)  # another seed: faces never trained on
        held_out = features(np.asarray(load_image_dataset(work / "held-out", RES, progress=False).images))
        distances, sample_seconds = {}, {}
        for sampler, steps in CONTENDERS:
            started = time.perf_counter()
            images = draw(run, sampler, steps, n, batch=64).images
            sample_seconds[f"{sampler}-{steps}"] = time.perf_counter() - started
            distances[f"{sampler}-{steps}"] = frechet_distance(features(images), held_out)
            print(f"{sampler}-{steps}: FD {distances[f'{sampler}-{steps}']:.4f}", flush=True)
        timings: dict[str, list[float]] = {f"{s}-{k}": [] for s, k in CONTENDERS}
        for round_index in range(rounds):  # alternate the order: forward, backward, forward ...
            order = CONTENDERS if round_index % 2 == 0 else CONTENDERS[::-1]
            for sampler, steps in order:
                started = time.perf_counter()
                draw(run, sampler, steps, args.timing_batch, batch=args.timing_batch)
                timings[f"{sampler}-{steps}"].append((time.perf_counter() - started) / args.timing_batch)
        trajectory = draw(run, "dpmpp", 20, 4, batch=4, record=4).trajectory
        animation_kib = {suffix: round(len(encode_animation(trajectory, suffix)[0]) / 1024, 1)
                         for suffix in (".gif", ".webp", ".png")}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    run_options = {key: run_config[key] for key in ("preset", "resolution", "batch_size", "steps", "lr")}
    reference = distances["{}-{}".format(*CONTENDERS[0])]  # DDPM-1000, the first contender
    rows = []
    for sampler, steps in CONTENDERS:
        key = f"{sampler}-{steps}"
        seconds = timings[key]
        rows.append({
            "sampler": sampler, "steps": steps, "fd_pixels": round(distances[key], 5),
            "fd_vs_ddpm1000": round(distances[key] / reference, 3),
            "within_5pct": distances[key] <= (1 + WITHIN) * reference,
            "s_per_image_median": round(statistics.median(seconds), 4),
            "s_per_image_min": round(min(seconds), 4), "s_per_image_max": round(max(seconds), 4),
            "speedup_vs_ddpm1000": None,
        })  # fmt: skip
    ddpm_time = rows[0]["s_per_image_median"]
    for row in rows:
        row["speedup_vs_ddpm1000"] = round(ddpm_time / row["s_per_image_median"], 1)
    needed = {}
    for name in ("ddim", "dpmpp"):
        ok = [row["steps"] for row in rows if row["sampler"] == name and row["within_5pct"]]
        needed[name] = min(ok) if ok else None
    summary = {
        "n_images": n, "resolution": RES, "feature_space": "pixels, 2x2-average-pooled to 4x4 RGB (48-d)",
        "fd_ddpm1000": round(reference, 5),
        "ddim_steps_within_5pct": needed["ddim"], "dpmpp_steps_within_5pct": needed["dpmpp"],
        "fd_ddim20_over_ddpm1000": rows[2]["fd_vs_ddpm1000"],
        "fd_dpmpp20_over_ddpm1000": rows[5]["fd_vs_ddpm1000"],
        "s_per_image_ddpm1000": ddpm_time, "s_per_image_dpmpp20": rows[5]["s_per_image_median"],
        "timing_rounds": rounds, "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in load_after], "torch_threads": torch.get_num_threads(),
        "trained_here": args.run is None, "run_train_options": run_options,
        "animation_kib": animation_kib,
    }  # fmt: skip
    text = ("Fréchet distance to held-out faces in pooled pixel space (same N and seeds for every sampler); "
            "'within_5pct': FD at most 1.05x DDPM-1000's. Seconds per image: median of the rounds "
            f"(batch of {args.timing_batch}, alternating order), min and max beside it.")  # fmt: skip
    report = Report(
        title=f"bench_sample: FD vs steps, DDPM-1000 vs DDIM and DPM-Solver++ ({n} images, {RES} px, CPU)",
        command="bench_sample", summary=summary,
        sections=[Section(heading="Quality and speed per sampler", text=text, table=rows),
                  Section(heading="Animation size (4 images, 20 DPM++ steps, 64 px tiles)",
                          table=[{"format": k, "KiB": v} for k, v in animation_kib.items()])],
        data={"rows": rows, "summary": summary, "timings": timings, "sample_seconds": sample_seconds},
    )  # fmt: skip
    paths = write_report(report, args.out)
    print(f"wrote {paths.html} and {paths.json}")


if __name__ == "__main__":
    main()
