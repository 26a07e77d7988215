"""The mission at its own size, end to end on this CPU: ``python -m benchmarks.rehearsal``.

A user's whole pipeline, run as the user runs it (each stage is the ``diffkit`` command in its own
process, with ``--json``), against the local fake-face site serving real-size JPEGs (1024 x 1024,
quality 90) with exact repeats, near-copies and faults switched on:

1. ``scrape``: ``diffkit scrape --n 30000`` (the site in its own process; its CPU is not diffkit's);
2. ``dedupe_cold``: ``diffkit dedupe`` of the images with nothing recorded (every file decoded), and
   ``dedupe_warm``: of the scrape folder, where the scraper's records mean nothing is decoded again;
   both must give the same clusters;
3. ``train``: the ``small`` preset at 64 px for a wall-clock budget (``--max-minutes``) with FID
   while training (stand-in Inception weights) and post-hoc EMA profiles, killed with SIGKILL part-way
   (``train_killed``) and resumed (``train_resume``) with what is left of the budget;
4. ``sample``: 1,000 images from the EMA weights (DPM-Solver++ 20 steps) with a grid;
5. ``eval``: FID/KID/IS at N = 1,000 against 1,000 of the training images.

Per stage it records wall and CPU seconds (the command's own rusage, its reaped children included),
peak resident memory, the disk its outputs take and their file count, and a curve sampled every few
seconds (progress, load average, the process's CPU): does anything slow down as the manifest, the
folder or the run grows? Stage records are kept in ``WORK/stages.json``, so a rerun with the same
``--work`` continues after the last finished stage (a rehearsal is hours; a crash should not cost them).
The report, ``reports/rehearsal.{html,json}``, adds the final grid, the FID-over-training curve and a
GPU projection from the FLOP counts (labelled as a projection).

    python -m benchmarks.rehearsal --work /tmp/rehearsal            # 30k faces, 60 min of training
    python -m benchmarks.rehearsal --quick --work /tmp/rh --report-dir /tmp/rh-report   # a smoke run
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
REDOABLE = ("dedupe_cold", "dedupe_warm")  # stages whose input is still there when the rehearsal is done
STAGES = ("scrape", "dedupe_cold", "dedupe_warm", "train_killed", "train_resume", "sample", "eval")


@dataclass(frozen=True)
class Plan:
    n: int = 30_000
    image_size: int = 1024
    jpeg_quality: int = 90
    repeat_rate: float = 0.03
    near_dup_rate: float = 0.02
    faults: tuple[str, ...] = ("http_503=0.005", "truncated=0.003", "not_image=0.002", "bad_length=0.002")
    rps: float = 500.0
    concurrency: int = 8
    preset: str = "small"
    resolution: int = 64
    train_minutes: float = 60.0
    kill_after_minutes: float = 30.0  # of training (the loop's own seconds), in the middle
    eval_every_kimg: float = 4.0
    eval_samples: int = 128
    eval_reference: int = 1000  # training images in FID-while-training's reference (set-up time on a CPU)
    phema_every_kimg: float = 8.0
    sample_n: int = 1000
    sampler: str = "dpmpp"
    sample_steps: int = 20
    eval_n: int = 1000
    poll_s: float = 5.0
    state_every_minutes: float | None = None  # None: the product's default (10), as a user runs it


QUICK = Plan(n=300, image_size=256, train_minutes=2.0, kill_after_minutes=0.8, eval_every_kimg=0.25,
             eval_reference=64, eval_samples=32, phema_every_kimg=0.25, sample_n=64,
             sample_steps=5, eval_n=64, preset="tiny",
             resolution=32, poll_s=1.0, state_every_minutes=0.25)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Measuring a process


def proc_cpu_s(pid: int) -> float | None:
    """User + system seconds of a live process and of its reaped children (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / TICK


def proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def folder_usage(path: Path) -> tuple[int, int]:
    """(bytes on disk, files) under ``path``."""
    total, files = 0, 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
                files += 1
            except FileNotFoundError:
                continue
    return total, files


def count_files(path: Path, suffix: str) -> int:
    return sum(1 for _, _, names in os.walk(path) for name in names if name.endswith(suffix))


def last_json_line(path: Path) -> dict[str, Any] | None:
    """The last complete JSON line of a growing file (read from its end)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


@dataclass
class Finished:
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    curve: list[dict[str, Any]]


def run_measured(
    command: list[str],
    cwd: Path,
    progress: Callable[[], float | None],
    poll_s: float,
    watch: Callable[[subprocess.Popen[str], float, float | None], None] | None = None,
    keep: frozenset[int] = frozenset(),
) -> Finished:
    """Run ``command`` to its end, sampling (t, progress, load, CPU, RSS) every ``poll_s`` seconds.

    CPU is every descendant's: this process is a child subreaper (:func:`become_subreaper`), so a
    grandchild its parent never waits for (the forkserver of dedupe's hashing pool, and the workers it
    reaps) is reparented here and reaped, and the stage's CPU is the change of RUSAGE_CHILDREN. Peak RSS
    is the command's own (``wait4``). ``keep``: children of this process that outlive the stage (the fake
    site). ``watch(process, t, progress)`` is called at every sample (the kill)."""
    out_path, err_path = cwd / ".stage-stdout", cwd / ".stage-stderr"
    curve: list[dict[str, Any]] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, text=True, env=child_env())
        done = threading.Event()

        def sample() -> None:
            while not done.wait(poll_s):
                t = time.perf_counter() - start
                value = progress()
                curve.append(
                    {
                        "t_s": round(t, 1),
                        "progress": value,
                        "load1": round(os.getloadavg()[0], 2),
                        "cpu_s": proc_cpu_s(process.pid),
                        "rss_mb": proc_rss_mb(process.pid),
                    }
                )
                if watch is not None:
                    watch(process, t, value)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        reap_orphans(keep)
        done.set()
        sampler.join()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    curve.append(
        {
            "t_s": round(wall, 1),
            "progress": progress(),
            "load1": round(os.getloadavg()[0], 2),
            "cpu_s": cpu,
            "rss_mb": None,
        }
    )
    return Finished(
        process.returncode,
        wall,
        cpu,
        usage.ru_maxrss / 1024,
        out_path.read_text(),
        err_path.read_text(),
        curve,
    )


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def become_subreaper() -> bool:
    """Orphaned descendants are reparented to this process (not to init), so their CPU can be counted."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def child_pids() -> set[int]:
    """This process's live children (from /proc: ppid is the fourth field of /proc/PID/stat)."""
    me, found = os.getpid(), set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == me:
                found.add(int(entry.name))
    return found


def reap_orphans(keep: set[int], limit_s: float = 300.0) -> None:
    """Wait for and reap the stage's orphans (a pool's forkserver and its workers leave once their parent
    has gone): every child of this process but ``keep`` (the fake site), within ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        waiting = child_pids() - keep
        if not waiting:
            return
        for pid in waiting:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
        time.sleep(0.05)


def child_env() -> dict[str, str]:
    """The children import diffkit from this checkout (a worktree at a fixed commit), not the editable
    install's source folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def diffkit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "diffkit", *args, "--no-progress", "--json"]


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


# ---------------------------------------------------------------------------------------------------
# The stages


class Rehearsal:
    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan, self.work = plan, work
        self.faces, self.run_dir, self.samples = work / "faces", work / "run", work / "samples"
        self.reports = work / "stage-reports"
        self.weights = work / "inception-generated.pth"
        self.record_path = work / "stages.json"
        self.records: dict[str, Any] = (
            json.loads(self.record_path.read_text()) if self.record_path.exists() else {}
        )

    def save(self, name: str, record: dict[str, Any]) -> None:
        record["commit"] = git_commit()
        record["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.records[name] = record
        temp = self.record_path.with_suffix(".tmp")
        temp.write_text(json.dumps(self.records, indent=1))
        os.replace(temp, self.record_path)

    def measured(self, finished: Finished, folder: Path | None, stage: str) -> dict[str, Any]:
        if finished.returncode != 0:
            raise SystemExit(f"{stage} failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
        disk, files = folder_usage(folder) if folder is not None else (0, 0)
        return {
            "wall_s": round(finished.wall_s, 2),
            "cpu_s": round(finished.cpu_s, 2),
            "peak_rss_mb": round(finished.peak_rss_mb, 1),
            "disk_mb": round(disk / 2**20, 1),
            "files": files,
            "curve": finished.curve,
            "result": json.loads(finished.stdout),
            "stderr_tail": finished.stderr[-1500:],
        }

    # -- scrape ------------------------------------------------------------------------------------

    def start_site(self) -> tuple[subprocess.Popen[str], str]:
        plan = self.plan
        command = [
            sys.executable,
            "-m",
            "diffkit.fakesite",
            "--port",
            "0",
            "--size",
            str(plan.image_size),
            "--quality",
            str(plan.jpeg_quality),
            "--repeat-rate",
            str(plan.repeat_rate),
            "--near-dup-rate",
            str(plan.near_dup_rate),
            "--retry-after",
            "1",
        ]
        for fault in plan.faults:
            command += ["--fault", fault]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=child_env())
        assert process.stdout is not None
        line = process.stdout.readline()
        return process, next(word for word in line.split() if word.startswith("http://"))

    def scrape(self) -> dict[str, Any]:
        plan = self.plan
        site, url = self.start_site()
        images = self.faces / "images"
        try:
            finished = run_measured(
                diffkit_command(
                    "scrape",
                    "--n",
                    str(plan.n),
                    "--url",
                    url,
                    "--out",
                    str(self.faces),
                    "--rps",
                    str(plan.rps),
                    "--concurrency",
                    str(plan.concurrency),
                    "--expect-size",
                    f"{plan.image_size}x{plan.image_size}",
                    "--report",
                    str(self.reports / "scrape.html"),
                ),
                self.work,
                lambda: count_files(images, ".jpg"),
                plan.poll_s,
                keep=frozenset({site.pid}),
            )
        finally:
            site_cpu = proc_cpu_s(site.pid)
            site.send_signal(signal.SIGTERM)
            site.wait(timeout=60)
        record = self.measured(finished, self.faces, "scrape")
        record["site_cpu_s"] = round(site_cpu or 0.0, 2)
        return record

    # -- dedupe ------------------------------------------------------------------------------------

    def dedupe(self, folder: Path, name: str) -> dict[str, Any]:
        from diffkit.dedupe.config import CACHE_NAME

        # dedupe's own cache from an earlier measurement would make this a cached rerun: the cold stage
        # must decode every file, the warm one must use only the scraper's records.
        (folder / CACHE_NAME).unlink(missing_ok=True)
        finished = run_measured(
            diffkit_command("dedupe", str(folder), "--report", str(self.reports / f"{name}.html")),
            self.work,
            lambda: None,
            self.plan.poll_s,
        )
        record = self.measured(finished, None, name)
        record["clusters"] = clusters_by_file_name(record["result"])
        return record

    def dedupe_cold(self) -> dict[str, Any]:
        # The images folder alone has no scrape manifest beside it: every file is decoded (a cold run).
        return self.dedupe(self.faces / "images", "dedupe_cold")

    def dedupe_warm(self) -> dict[str, Any]:
        record = self.dedupe(self.faces, "dedupe_warm")
        cold = self.records["dedupe_cold"]["clusters"]
        record["same_clusters_as_cold"] = record["clusters"] == cold
        return record

    # -- train -------------------------------------------------------------------------------------

    def train_args(self) -> list[str]:
        plan = self.plan
        return [
            "--data",
            str(self.faces),
            "--out",
            str(self.run_dir),
            "--preset",
            plan.preset,
            "--resolution",
            str(plan.resolution),
            "--eval-every-kimg",
            str(plan.eval_every_kimg),
            "--eval-samples",
            str(plan.eval_samples),
            "--phema-every-kimg",
            str(plan.phema_every_kimg),
            "--eval-reference",
            str(plan.eval_reference),
            "--sample-every-kimg",
            "0",
            "--no-tensorboard",
            *self.config_file(),
        ]

    def config_file(self) -> list[str]:
        """A smoke run is killed within a minute: it saves its state more often than the default."""
        if self.plan.state_every_minutes is None:
            return []
        path = self.work / "train-extra.toml"
        path.write_text(f"state_every_minutes = {self.plan.state_every_minutes}\n")
        return ["--config", str(path)]

    def train_progress(self) -> float | None:
        last = last_json_line(self.run_dir / "stats.jsonl")
        return None if last is None else last.get("kimg")

    def train_killed(self) -> dict[str, Any]:
        plan = self.plan
        if self.run_dir.exists():  # an earlier attempt at this stage died: start it again from nothing
            shutil.rmtree(self.run_dir)
        marks: dict[str, Any] = {}

        def stderr_text() -> str:
            try:
                return (self.work / ".stage-stderr").read_text(errors="replace")
            except FileNotFoundError:
                return ""

        def watch(process: subprocess.Popen[str], t: float, kimg: float | None) -> None:
            if "model_line_t" not in marks and " GFLOPs/image forward" in stderr_text():
                marks["model_line_t"] = t  # the model line follows the data cache
            last = last_json_line(self.run_dir / "stats.jsonl")
            if last is None or "train_seconds" not in last:
                return
            if "first_record" not in marks:  # when the steps began: the first record's time less its seconds
                marks["first_record"] = True
                marks["steps_start_t"] = t - last["train_seconds"]
            # The loop's own clock of training seconds (stats.jsonl, flushed every 50 steps) decides the kill.
            if "killed_at_t" not in marks and last["train_seconds"] >= plan.kill_after_minutes * 60:
                marks["killed_at_t"], marks["kimg_at_kill"] = t, kimg
                marks["train_seconds_at_kill"] = last["train_seconds"]
                process.send_signal(signal.SIGKILL)

        self.weights_ready()
        finished = run_measured(
            diffkit_command("train", *self.train_args(), "--max-minutes", str(plan.train_minutes)),
            self.work,
            self.train_progress,
            plan.poll_s,
            watch,
        )
        if "killed_at_t" not in marks or finished.returncode != -signal.SIGKILL:
            raise SystemExit(
                f"train was not killed as planned ({finished.returncode}): {finished.stderr[-2000:]}"
            )
        disk, files = folder_usage(self.run_dir)
        # What survives the kill: the state last written before it (state_every_minutes, or a snapshot).
        kept_step, kept_s = kept_training(self.run_dir)
        return {
            "wall_s": round(finished.wall_s, 2),
            "cpu_s": round(finished.cpu_s, 2),
            "peak_rss_mb": round(finished.peak_rss_mb, 1),
            "disk_mb": round(disk / 2**20, 1),
            "files": files,
            "curve": finished.curve,
            "cache_build_s": round(marks["model_line_t"], 1),
            "setup_s": round(marks["steps_start_t"], 1),  # data cache, model, FID reference features
            "killed_after_training_s": round(marks["killed_at_t"] - marks["steps_start_t"], 1),
            "kimg_at_kill": marks["kimg_at_kill"],
            "state_step": kept_step,
            "state_written_after_training_s": round(kept_s, 1),
            "stderr_tail": finished.stderr[-1500:],
        }

    def train_resume(self) -> dict[str, Any]:
        killed = self.records["train_killed"]
        left_min = max(1.0, self.plan.train_minutes - killed["state_written_after_training_s"] / 60)
        finished = run_measured(
            diffkit_command("train", *self.train_args(), "--resume", "--max-minutes", f"{left_min:.2f}"),
            self.work,
            self.train_progress,
            self.plan.poll_s,
        )
        record = self.measured(finished, self.run_dir, "train_resume")
        record["max_minutes_given"] = round(left_min, 2)
        return record

    # -- sample and eval ---------------------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        plan = self.plan
        finished = run_measured(
            diffkit_command(
                "sample",
                "--run",
                str(self.run_dir),
                "--n",
                str(plan.sample_n),
                "--sampler",
                plan.sampler,
                "--steps",
                str(plan.sample_steps),
                "--out",
                str(self.samples),
                "--grid",
                "--report",
                str(self.reports / "sample.html"),
            ),
            self.work,
            lambda: count_files(self.samples, ".png"),
            plan.poll_s,
        )
        return self.measured(finished, self.samples, "sample")

    def eval(self) -> dict[str, Any]:
        plan = self.plan
        finished = run_measured(
            diffkit_command(
                "eval",
                "--generated",
                str(self.samples),
                "--reference",
                str(self.faces),
                "--samples",
                str(plan.eval_n),
                "--reference-samples",
                str(plan.eval_n),
                "--metrics",
                "fid,kid,is",
                "--weights",
                str(self.weights_ready()),
                "--cache-dir",
                str(self.work / "feature-cache"),
                "--report",
                str(self.reports / "eval.html"),
            ),
            self.work,
            lambda: None,
            plan.poll_s,
        )
        return self.measured(finished, self.work / "feature-cache", "eval")

    def weights_ready(self) -> Path:
        if not self.weights.exists():
            from diffkit.testing.inception import make_inception_weights

            make_inception_weights(self.weights)
        os.environ["DIFFKIT_INCEPTION_WEIGHTS"] = str(self.weights)  # FID while training reads it
        return self.weights

    def run(self, stop_after: str | None) -> None:
        self.reports.mkdir(parents=True, exist_ok=True)
        for name in STAGES:
            if name in self.records:
                print(f"{name}: done earlier ({self.records[name]['wall_s']} s)", flush=True)
            else:
                print(f"{name}: running ({time.strftime('%H:%M:%S')})", flush=True)
                self.save(name, getattr(self, name)())
                print(
                    f"{name}: {self.records[name]['wall_s']} s wall, {self.records[name]['cpu_s']} s CPU",
                    flush=True,
                )
            if name == stop_after:
                return

    def redo(self, names: list[str]) -> None:
        """Measure finished stages again (the dedupe runs: their input is still there), e.g. once the
        machine is quieter; the first measurement is kept in the record as ``first_run``."""
        for name in names:
            first = self.records.get(name)
            print(f"{name}: measuring again ({time.strftime('%H:%M:%S')})", flush=True)
            record = getattr(self, name)()
            if first is not None:
                kept = ("wall_s", "cpu_s", "peak_rss_mb", "commit", "finished_at")
                record["first_run"] = {key: first.get(key) for key in kept} | {
                    "mean_load1": _mean_load(first)
                }
            self.save(name, record)
            print(f"{name}: {record['wall_s']} s wall, {record['cpu_s']} s CPU", flush=True)

    def keep_earlier_scrape(self, stages_json: Path) -> None:
        """Keep an earlier rehearsal's scrape (wall, CPU, commit, curve) in this one's scrape record, as
        ``earlier``: the report sets the two side by side (a cost measured before and after a fix)."""
        earlier = json.loads(Path(stages_json).read_text())["scrape"]
        record = self.records["scrape"]
        kept = ("wall_s", "cpu_s", "commit", "finished_at", "curve")
        record["earlier"] = {key: earlier[key] for key in kept} | {
            "kept": earlier["result"]["kept_total"],
            "mean_load1": _mean_load(earlier),
        }
        self.save("scrape", record)


def _mean_load(record: dict[str, Any]) -> float | None:
    loads = [point["load1"] for point in record.get("curve", []) if point.get("load1") is not None]
    return round(sum(loads) / len(loads), 2) if loads else None


def kept_training(run_dir: Path) -> tuple[int, float]:
    """(step, training seconds) of the state a kill left: its step from state-latest.pt, its seconds
    interpolated between the stats.jsonl records around it (they are written every 50 steps)."""
    import torch

    state = run_dir / "state-latest.pt"
    if not state.exists():
        return 0, 0.0
    step = int(torch.load(state, map_location="cpu", weights_only=False)["step"])
    points = [(0, 0.0)] + [
        (record["step"], record["train_seconds"])
        for record in map(json.loads, (run_dir / "stats.jsonl").read_text().splitlines())
        if "train_seconds" in record and "kind" not in record
    ]
    below = max((p for p in points if p[0] <= step), key=lambda p: p[0])
    above = min((p for p in points if p[0] >= step), key=lambda p: p[0], default=None)
    if above is None or above[0] == below[0]:
        rate = below[1] / below[0] if below[0] else 0.0
        return step, below[1] + (step - below[0]) * rate
    share = (step - below[0]) / (above[0] - below[0])
    return step, below[1] + share * (above[1] - below[1])


def clusters_by_file_name(result: dict[str, Any]) -> list[list[str]]:
    """Dedupe's clusters as sorted lists of file names (the cold run sees paths under images/, the warm
    run under the scrape folder: the names are what must agree)."""
    clusters = [sorted(Path(member).name for member in cluster) for cluster in result.get("clusters", [])]
    return sorted(clusters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (about 8 GB at full size)")
    parser.add_argument("--report-dir", type=Path, default=Path("reports"))
    parser.add_argument("--quick", action="store_true", help="a smoke run at test size (not the mission's)")
    parser.add_argument("--stop-after", choices=STAGES, help="stop after this stage (rerun to continue)")
    parser.add_argument("--report-only", action="store_true", help="build the report from stages.json")
    parser.add_argument(
        "--train-minutes", type=float, help="training budget (default 60; the kill comes at half of it)"
    )
    parser.add_argument(
        "--redo",
        nargs="+",
        choices=REDOABLE,
        default=[],
        help="measure these finished stages again, then report",
    )
    parser.add_argument(
        "--earlier-scrape",
        type=Path,
        metavar="STAGES_JSON",
        help="an earlier rehearsal's stages.json: its scrape is shown beside this one's (before a fix)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else Plan()
    if args.train_minutes is not None:
        plan = dataclasses.replace(
            plan, train_minutes=args.train_minutes, kill_after_minutes=args.train_minutes / 2
        )
    if args.quick and args.report_dir == Path("reports"):
        parser.error("--quick measures nothing of the mission: pass --report-dir outside reports/")
    args.work.mkdir(parents=True, exist_ok=True)
    plan_path = args.work / "plan.json"
    if plan_path.exists() and json.loads(plan_path.read_text()) != json.loads(json.dumps(asdict(plan))):
        parser.error(f"{args.work} holds a rehearsal with another plan: use a new --work")
    plan_path.write_text(json.dumps(asdict(plan), indent=1))
    become_subreaper()
    rehearsal = Rehearsal(plan, args.work)
    if not args.report_only:
        if args.redo:  # only these (never alongside a pipeline still running on the same --work)
            rehearsal.redo(args.redo)
        else:
            rehearsal.run(args.stop_after)
    if args.earlier_scrape is not None:
        rehearsal.keep_earlier_scrape(args.earlier_scrape)
    if all(name in rehearsal.records for name in STAGES):
        from benchmarks.rehearsal_report import write_rehearsal_report

        paths = write_rehearsal_report(plan, rehearsal, args.report_dir)
        print(f"wrote {paths.html} and {paths.json}")


if __name__ == "__main__":
    main()
