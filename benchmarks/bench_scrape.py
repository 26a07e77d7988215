"""Benchmark ``diffkit scrape`` against the local fake-face site, versus a naive ``httpx.get`` loop.

The site runs in its own process with a request cap R (429 + Retry-After above it) and a latency L
per response. Reported: kept unique images per second as a fraction of R, the ratio to a naive
sequential loop (``httpx.get`` + sha256 dedupe + plain file write, no validation) in the same run,
and client CPU time per kept image (the site's CPU is not counted: it is another process).

    .venv/bin/python benchmarks/bench_scrape.py            # N=150, R=10/s, L=0.2 s, 512 px
    .venv/bin/python benchmarks/bench_scrape.py --quick    # N=40, 256 px
"""

from __future__ import annotations

import argparse
import hashlib
import io
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from diffkit.report import Report, Section, bar_chart, write_report
from diffkit.scrape import ScrapeConfig, scrape
from diffkit.scrape.validate import phash_of


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # this process and all its threads
    return usage.ru_utime + usage.ru_stime


def start_site(rate_cap: float, latency: float, size: int) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "diffkit.fakesite", "--port", "0", "--size", str(size),
               "--max-rps", str(rate_cap), "--latency", str(latency), "--retry-after", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # "Serving fake faces at http://127.0.0.1:PORT/random-person.jpeg ..."
    url = next(word for word in line.split() if word.startswith("http://"))
    return process, url


def warm_up() -> None:
    """Import-time costs (scipy via imagehash, Pillow plugins) are paid once here, not by a contender."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 150)).save(buffer, format="JPEG")
    phash_of(buffer.getvalue())


def run_diffkit(url: str, n: int, rps: float, concurrency: int, out: Path) -> dict[str, Any]:
    cpu, wall = cpu_seconds(), time.perf_counter()
    result = scrape(ScrapeConfig(n=n, out=out, url=url, rps=rps, concurrency=concurrency, progress=False,
                                 report=False, backoff_base_s=0.2))
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return {"kept": result.kept_new, "requests": result.requests, "seconds": wall,
            "http_429": result.rejections.get("http_429", 0), "cpu_s": cpu}


def run_naive(url: str, n: int, out: Path) -> dict[str, Any]:
    """What people write first: a sequential loop of httpx.get, dedupe by sha256, no validation."""
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    requests = throttled = 0
    cpu, wall = cpu_seconds(), time.perf_counter()
    while len(seen) < n:
        response = httpx.get(url, timeout=30)
        requests += 1
        if response.status_code != 200:
            throttled += response.status_code == 429
            continue
        digest = hashlib.sha256(response.content).hexdigest()
        if digest not in seen:
            seen.add(digest)
            (out / f"{digest}.jpg").write_bytes(response.content)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return {"kept": len(seen), "requests": requests, "seconds": wall, "http_429": throttled, "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: N=40, 256 px")
    parser.add_argument("--n", type=int, default=None, help="unique images per contender")
    parser.add_argument("--cap", type=float, default=10.0, help="site request cap R (requests/s)")
    parser.add_argument("--latency", type=float, default=0.2, help="site latency L per response (s)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_scrape.html"))
    args = parser.parse_args()
    n = args.n or (40 if args.quick else 150)
    size = args.size or (256 if args.quick else 512)
    warm_up()
    work = Path(tempfile.mkdtemp(prefix="bench_scrape-"))
    site, url = start_site(args.cap, args.latency, size)
    rows: list[dict[str, Any]] = []
    try:
        contenders = [
            ("naive sequential httpx.get", lambda: run_naive(url, n, work / "naive")),
            (f"diffkit --rps {args.cap:g} (= R)", lambda: run_diffkit(
                url, n, args.cap, args.concurrency, work / "diffkit")),
            (f"diffkit --rps {2 * args.cap:g} (2R: adapts)", lambda: run_diffkit(
                url, n, 2 * args.cap, args.concurrency, work / "diffkit-2r")),
        ]
        for name, run in contenders:
            time.sleep(1.5)  # let the site's token bucket refill between contenders
            measured = run()
            kept_per_s = measured["kept"] / measured["seconds"]
            rows.append({"contender": name, **measured, "kept_per_s": kept_per_s,
                         "fraction_of_cap": kept_per_s / args.cap,
                         "cpu_ms_per_kept": 1000 * measured["cpu_s"] / max(measured["kept"], 1)})
            print(f"{name:32s} kept/s {kept_per_s:6.2f} ({kept_per_s / args.cap:.0%} of R)  "
                  f"429s {measured['http_429']:4d}  CPU {rows[-1]['cpu_ms_per_kept']:.1f} ms/kept",
                  flush=True)
    finally:
        site.terminate()
        site.wait()
        shutil.rmtree(work, ignore_errors=True)
    naive = rows[0]["kept_per_s"]
    for row in rows:
        row["ratio_vs_naive"] = row["kept_per_s"] / naive
    best = rows[1]
    summary = {"N": n, "R (req/s cap)": args.cap, "L (s)": args.latency, "image px": size,
               "concurrency": args.concurrency, "diffkit kept/s": best["kept_per_s"],
               "diffkit fraction of R": best["fraction_of_cap"], "ratio vs naive": best["ratio_vs_naive"],
               "diffkit CPU ms/kept": best["cpu_ms_per_kept"],
               "naive CPU ms/kept": rows[0]["cpu_ms_per_kept"]}
    report = Report(
        title="Benchmark: diffkit scrape vs a naive httpx.get loop", command="bench_scrape", summary=summary,
        sections=[
            Section(heading="Contenders", table=rows),
            Section(heading="Kept images per second", figure=bar_chart(
                {row["contender"]: row["kept_per_s"] for row in rows}, ylabel="kept/s")),
            Section(heading="Method", text=(
                f"Local site in its own process: {size} px JPEG faces, cap R={args.cap:g} req/s (429 with "
                f"Retry-After: 1 above it), latency L={args.latency:g} s. diffkit validates every image "
                "(full decode, pHash) and fsyncs each file; the naive loop only hashes and writes. CPU is "
                "client process time (user+system) per kept image. Other jobs share this machine."
            )),
        ],
        data={"rows": rows},
    )
    paths = write_report(report, args.out)
    print(f"report: {paths.html} and {paths.json}")


if __name__ == "__main__":
    main()
