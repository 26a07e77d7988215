"""Mutation harness: plant each realistic bug of ``mutants.py`` in a copy of the repository, one at a
time, and check that the module's own tests catch it.

    .venv/bin/python tests/mutation/run.py                    # every mutant; writes reports/mutation.json
    .venv/bin/python tests/mutation/run.py --module diffusion  # one module's mutants (repeatable)
    .venv/bin/python tests/mutation/run.py --list             # the mutants, and whether each still applies
    .venv/bin/python tests/mutation/run.py --strict           # exit 1 on stale mutants, unexplained survivors

The working tree is never touched: the files git knows (tracked and untracked-but-not-ignored, or
``--source head`` for the last commit) are copied to a temporary folder, and each mutant is written
there, tested with ``pytest -x -q`` on its own test selection (with ``PYTHONPATH`` pointing at the copy,
so CLI subprocesses import the mutant too) and put back. Before the first mutant of a selection, the
selection runs once unmutated: a selection that fails on its own cannot judge a mutant (its mutants are
``skipped``), and its time sets the mutants' timeout. docs/testing.md explains the choices.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))  # mutants.py beside this file (tests/ is no package: a venv has its own)

from mutants import MODULES, MUTANTS, Mutant  # noqa: E402

DEFAULT_REPORT = REPO / "reports" / "mutation.json"
BASELINE_TIMEOUT = 1800.0  # seconds: an unmutated selection that hangs this long is a broken baseline
# Statuses that leave nothing to do; "survived" is fine too when the mutant states why it is equivalent.
DONE = {"caught", "timeout"}
_FAILED_LINE = re.compile(r"^(FAILED|ERROR) (\S+)", re.MULTILINE)


@dataclass
class Outcome:
    """What one pytest run of a selection said."""

    returncode: int | None  # None: killed at the timeout
    seconds: float
    output: str

    @property
    def first_failure(self) -> str:
        """The first failing test's node id, else what pytest's last line says."""
        match = _FAILED_LINE.search(self.output)
        if match:
            return match.group(2)
        tail = [line for line in self.output.strip().splitlines() if line.strip()][-1:]
        return f"pytest exit {self.returncode}: {tail[0] if tail else 'no output'}"

    @property
    def why(self) -> str:
        """The first failure with its reason: the summary's message, or the error of a collection error."""
        match = _FAILED_LINE.search(self.output)
        if not match:
            return self.first_failure
        line = self.output[match.start() :].splitlines()[0]
        if " - " not in line:  # a collection error: its "E   ..." lines say why
            errors = [text.strip() for text in self.output.splitlines() if text.startswith("E   ")]
            line += f" - {errors[-1][1:].strip()}" if errors else ""
        return line[:300]


@dataclass
class Result:
    mutant: Mutant
    status: str  # caught, survived, timeout, stale, ambiguous, invalid, skipped
    seconds: float = 0.0
    file: str | None = None  # the file the snippet was found in
    failing_test: str | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        """Nothing to do: caught, timed out (a hang is a catch), or an equivalent survivor."""
        return self.status in DONE or (self.status == "survived" and bool(self.mutant.equivalent_because))

    def record(self) -> dict[str, object]:
        m = self.mutant
        entry: dict[str, object] = {
            "id": m.id,
            "module": m.module,
            "file": self.file or (m.file if isinstance(m.file, str) else " or ".join(m.file)),
            "description": m.description,
            "issue_24_bug": m.issue_bug,
            "status": self.status,
            "failing_test": self.failing_test,
            "tests": list(m.test_files),
            "k": m.k,
            "seconds": round(self.seconds, 1),
        }
        if self.status == "survived" or m.equivalent_because:
            entry["equivalent_because"] = m.equivalent_because
        if self.note:
            entry["note"] = self.note
        return entry


# -- the copy of the repository ------------------------------------------------------------------------


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True).stdout


def copy_tree(destination: Path, source: str) -> None:
    """The files of the working tree that git knows (``worktree``) or of the last commit (``head``)."""
    destination.mkdir(parents=True, exist_ok=True)
    if source == "head":
        with tarfile.open(fileobj=io.BytesIO(_git("archive", "--format=tar", "HEAD"))) as archive:
            archive.extractall(destination, filter="data")
        return
    names = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split(b"\0")
    for raw in names:
        if not raw:
            continue
        name = os.fsdecode(raw)
        origin = REPO / name
        if not (origin.is_file() or origin.is_symlink()):  # deleted in the working tree, or a submodule
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, target, follow_symlinks=False)


def source_description(source: str) -> dict[str, object]:
    commit = _git("rev-parse", "HEAD").decode().strip()
    dirty = (
        bool(_git("status", "--porcelain", "--untracked-files=no").strip()) if source == "worktree" else False
    )
    return {"source": source, "commit": commit, "uncommitted_changes": dirty}


# -- applying a mutant ---------------------------------------------------------------------------------


def resolve_file(mutant: Mutant, root: Path) -> Path | None:
    """The first of the mutant's candidate files that holds its snippet (None: none does, it is stale)."""
    for name in (mutant.file,) if isinstance(mutant.file, str) else mutant.file:
        path = root / name
        if path.is_file() and mutant.original in path.read_text(encoding="utf-8"):
            return path
    return None


def check_applies(mutant: Mutant, root: Path) -> tuple[str, Path | None, str | None]:
    """("ok", file, mutated text), or (status, file or None, None) with status stale (the snippet is
    in none of its files), ambiguous (more than once in its file) or invalid (the result is no Python)."""
    path = resolve_file(mutant, root)
    if path is None:
        return "stale", None, None
    text = path.read_text(encoding="utf-8")
    if text.count(mutant.original) > 1:
        return "ambiguous", path, None
    mutated = text.replace(mutant.original, mutant.replacement)
    if mutated == text:
        return "invalid", path, None
    try:
        compile(mutated, str(path), "exec")
    except SyntaxError:
        return "invalid", path, None
    return "ok", path, mutated


# -- running pytest in the copy ------------------------------------------------------------------------


def pytest_command(test_files: tuple[str, ...], k: str | None) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", *test_files]
    return [*command, "-k", k] if k else command


def pytest_env(root: Path) -> dict[str, str]:
    """What a run adds to the environment: the copy first on the path (CLI subprocesses too)."""
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH", "")])),
        # An unchanged size and a write within the same second would let a stale .pyc of the mutant be
        # imported after the original is put back: compile from source every time.
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }


def run_pytest(root: Path, test_files: tuple[str, ...], k: str | None, timeout: float | None) -> Outcome:
    """One pytest process from scratch (``--no-fork``)."""
    started = time.monotonic()
    # Own session: a timeout kills the whole group (CLI subprocesses, the fake site, torchrun ranks).
    process = subprocess.Popen(
        pytest_command(test_files, k),
        cwd=root,
        env=os.environ | pytest_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        code = None
    return Outcome(code, time.monotonic() - started, output.decode("utf-8", "replace"))


class Zygote:
    """A fork server (zygote.py) for one job: each run is a child forked with torch already imported."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "zygote.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
            text=True,
        )

    def _answer(self, timeout: float | None) -> dict[str, int] | None:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the pytest fork server ended unexpectedly")
        return json.loads(line)

    def run(self, root: Path, test_files: tuple[str, ...], k: str | None, timeout: float | None) -> Outcome:
        assert self.process.stdin is not None
        argv = pytest_command(test_files, k)[3:]  # without "python -m pytest"
        request = {"root": str(root), "argv": argv, "log": str(self.log), "env": pytest_env(root)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        pid = self._answer(None)["pid"]  # type: ignore[index]  (the first waits for the server's imports)
        started = time.monotonic()
        ended = self._answer(timeout)
        code: int | None = None
        if ended is None:  # the timeout: kill the child's whole group; the server reaps it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self._answer(None)
        else:
            code = ended["code"]
        seconds = time.monotonic() - started
        return Outcome(code, seconds, self.log.read_text(encoding="utf-8", errors="replace"))

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


@dataclass
class Runner:
    """Runs baselines and mutants in ``copies`` (one folder per job), sharing baselines between jobs."""

    copies: list[Path]
    timeout_factor: float
    min_timeout: float
    verbose: bool = False
    zygotes: dict[Path, Zygote] = field(default_factory=dict)  # empty: a fresh process per run
    _free: list[Path] = field(default_factory=list)
    _baselines: dict[tuple[tuple[str, ...], str | None], Outcome] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _selection_locks: dict[tuple[tuple[str, ...], str | None], threading.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._free = list(self.copies)

    def _take(self) -> Path:
        with self._lock:
            return self._free.pop()

    def _give(self, root: Path) -> None:
        with self._lock:
            self._free.append(root)

    def _pytest(
        self, root: Path, selection: tuple[tuple[str, ...], str | None], timeout: float | None
    ) -> Outcome:
        zygote = self.zygotes.get(root)
        return zygote.run(root, *selection, timeout) if zygote else run_pytest(root, *selection, timeout)

    def baseline(self, selection: tuple[tuple[str, ...], str | None], root: Path) -> Outcome:
        """The selection run once without a mutant, in the caller's (still unmutated) copy; each
        selection once, whichever job asks first (the others wait for it)."""
        with self._lock:
            lock = self._selection_locks.setdefault(selection, threading.Lock())
        with lock:
            if selection not in self._baselines:
                self._baselines[selection] = self._pytest(root, selection, BASELINE_TIMEOUT)
            return self._baselines[selection]

    def run(self, mutant: Mutant) -> Result:
        root = self._take()
        try:
            status, path, mutated = check_applies(mutant, root)
            if path is None or mutated is None:
                return Result(mutant, status, file=path and path.relative_to(root).as_posix())
            file = path.relative_to(root).as_posix()
            files = tuple(name for name in mutant.test_files if (root / name).is_file())
            if not files:
                return Result(mutant, "skipped", file=file, note="none of its test files exists")
            selection = (files, mutant.k)  # a test file not written yet (or gone) is left out
            base = self.baseline(selection, root)
            if base.returncode != 0:
                note = f"the selection fails without the mutant: {base.why}"
                return Result(mutant, "skipped", file=file, note=note)
            original = path.read_text(encoding="utf-8")
            path.write_text(mutated, encoding="utf-8")
            try:
                timeout = max(self.min_timeout, self.timeout_factor * base.seconds)
                outcome = self._pytest(root, selection, timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            if self.verbose:
                print(outcome.output, flush=True)
            if outcome.returncode is None:
                return Result(mutant, "timeout", outcome.seconds, file, note=f"killed after {timeout:.0f} s")
            if outcome.returncode == 0:
                return Result(mutant, "survived", outcome.seconds, file)
            return Result(mutant, "caught", outcome.seconds, file, failing_test=outcome.first_failure)
        finally:
            self._give(root)


# -- output --------------------------------------------------------------------------------------------


def line_for(result: Result) -> str:
    m = result.mutant
    detail = result.failing_test or result.note or ""
    if result.status == "survived":
        detail = f"equivalent: {m.equivalent_because}" if m.equivalent_because else "NEEDS A TEST"
    return f"{result.status:>9}  {m.module:<9} {m.id:<34} {result.seconds:6.1f}s  {detail}"


def summarise(entries: list[dict[str, object]]) -> dict[str, dict[str, int]]:
    summary: dict[str, dict[str, int]] = {}
    for entry in entries:
        counts = summary.setdefault(str(entry["module"]), {})
        status = str(entry["status"])
        if status == "survived":
            status = "survived_equivalent" if entry.get("equivalent_because") else "survived_unexplained"
        counts[status] = counts.get(status, 0) + 1
    return dict(sorted(summary.items()))


def print_summary(summary: dict[str, dict[str, int]], title: str) -> None:
    print(f"\n{title}")
    columns = ["caught", "timeout", "survived_equivalent", "survived_unexplained", "stale", "skipped"]
    print(f"  {'module':<10}" + "".join(f"{c.replace('survived_', 'surv. '):>16}" for c in columns))
    for module, counts in summary.items():
        others = sum(v for k, v in counts.items() if k not in columns)
        row = "".join(f"{counts.get(c, 0):>16}" for c in columns)
        print(f"  {module:<10}{row}" + (f"   (+{others} ambiguous/invalid)" if others else ""))


def write_report(path: Path, results: list[Result], meta: dict[str, object]) -> dict[str, object]:
    """Merge this run's results into ``path``: entries of mutants not run now are kept; entries of
    mutants no longer in the list are dropped."""
    known = {m.id for m in MUTANTS}
    previous: dict[str, dict[str, object]] = {}
    if path.is_file():
        try:
            for entry in json.loads(path.read_text(encoding="utf-8")).get("mutants", []):
                previous[str(entry["id"])] = entry
        except (ValueError, KeyError, AttributeError):
            previous = {}
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for result in results:
        previous[result.mutant.id] = result.record() | {"run_at": stamp} | meta
    order = {m.id: index for index, m in enumerate(MUTANTS)}
    entries = sorted((e for i, e in previous.items() if i in known), key=lambda e: order[str(e["id"])])
    report: dict[str, object] = {
        "what": "tests/mutation/run.py: realistic bugs planted one at a time, each against its module's "
        "tests (docs/testing.md#mutation-harness)",
        "updated_at": stamp,
        "mutant_count": len(MUTANTS),
        "summary": summarise(entries),
        "mutants": entries,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return report


# -- the command ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="tests/mutation/run.py")
    parser.add_argument(
        "--module", action="append", choices=sorted(MODULES), help="run this module's mutants (repeatable)"
    )
    parser.add_argument(
        "--id", action="append", default=[], help="run this mutant (repeatable; adds to --module)"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the mutants and whether each applies; run nothing"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 on stale/ambiguous/invalid/skipped mutants or survivors without equivalent_because",
    )
    parser.add_argument(
        "--source",
        choices=["worktree", "head"],
        default="worktree",
        help="what to copy: the working tree as it is (default) or the last commit",
    )
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once, each in its own copy")
    parser.add_argument(
        "--timeout-factor", type=float, default=4.0, help="timeout = factor x the baseline time"
    )
    parser.add_argument("--min-timeout", type=float, default=60.0, help="seconds; the least timeout")
    parser.add_argument(
        "--report", type=Path, default=DEFAULT_REPORT, help="JSON report to merge results into"
    )
    parser.add_argument("--no-report", action="store_true", help="write no report")
    parser.add_argument(
        "--no-fork", action="store_true", help="a fresh python per pytest run (no fork server; slower)"
    )
    parser.add_argument("--verbose", action="store_true", help="print pytest's output for every mutant")
    return parser.parse_args(argv)


def choose(args: argparse.Namespace) -> list[Mutant]:
    """Every mutant of a --module and every --id given (all mutants when neither is)."""
    unknown = set(args.id) - {m.id for m in MUTANTS}
    if unknown:
        raise SystemExit(f"unknown mutant id(s): {', '.join(sorted(unknown))} (see --list)")
    if not args.module and not args.id:
        return list(MUTANTS)
    return [m for m in MUTANTS if m.module in (args.module or ()) or m.id in args.id]


def list_mutants(mutants: list[Mutant]) -> int:
    """Print every mutant with its state against the working tree (no tests run)."""
    bad = 0
    for m in mutants:
        status, path, _ = check_applies(m, REPO)
        bad += status != "ok"
        flags = ("issue-24 " if m.issue_bug else "") + ("equivalent " if m.equivalent_because else "")
        where = path.relative_to(REPO).as_posix() if path else m.file
        print(f"{status:>9}  {m.module:<9} {m.id:<34} {flags}{m.description}")
        print(f"{'':>11}{where}  ->  {' '.join(m.test_files)}" + (f" -k {m.k!r}" if m.k else ""))
    counts = {module: sum(m.module == module for m in mutants) for module in MODULES}
    print(f"\n{len(mutants)} mutants: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    if bad:
        print(f"{bad} do not apply to the working tree (stale, ambiguous or invalid)")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mutants = choose(args)
    if args.list:
        return list_mutants(mutants)
    started = time.monotonic()
    source = source_description(args.source)  # before the copy: HEAD may move during a long run
    workdir = Path(tempfile.mkdtemp(prefix="diffkit-mutation-"))
    try:
        copies = [workdir / f"copy{index}" for index in range(max(1, args.jobs))]
        copy_tree(copies[0], args.source)
        for copy in copies[1:]:
            shutil.copytree(copies[0], copy, symlinks=True)
        zygotes = {} if args.no_fork else {c: Zygote(workdir / f"{c.name}.log") for c in copies}
        runner = Runner(copies, args.timeout_factor, args.min_timeout, args.verbose, zygotes)
        print(
            f"{len(mutants)} mutants, {len(copies)} job(s), copy of the {args.source} in {workdir}",
            flush=True,
        )
        results: list[Result] = []
        try:
            with ThreadPoolExecutor(max_workers=len(copies)) as pool:
                for result in pool.map(runner.run, mutants):
                    print(line_for(result), flush=True)
                    results.append(result)
        finally:
            for zygote in zygotes.values():
                zygote.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_summary(summarise([r.record() for r in results]), f"this run ({time.monotonic() - started:.0f} s)")
    if not args.no_report:
        report = write_report(args.report, results, source)
        print_summary(report["summary"], f"{args.report} (all modules, latest result of each mutant)")  # type: ignore[arg-type]
    failing = [r for r in results if not r.ok]
    if failing:
        print(
            f"\n{len(failing)} mutant(s) need attention: "
            + ", ".join(f"{r.mutant.id} ({r.status})" for r in failing)
        )
    return 1 if args.strict and failing else 0


if __name__ == "__main__":
    sys.exit(main())
