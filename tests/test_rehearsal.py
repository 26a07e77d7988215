"""The rehearsal's measuring parts (benchmarks/rehearsal.py, rehearsal_report.py): the numbers the report
is built from must be right before hours are spent producing them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.rehearsal import (
    QUICK,
    Plan,
    clusters_by_file_name,
    count_files,
    folder_usage,
    last_json_line,
    run_measured,
)
from benchmarks.rehearsal_report import (
    GPUS,
    MFU_ASSUMED,
    REFERENCE_PROJECT,
    projection,
    rate_early_late,
    train_rates,
)

ROOT = Path(__file__).resolve().parent.parent


def test_rate_early_late_constant_rate_is_one_and_a_halved_rate_is_half() -> None:
    steady = [(float(t), 10.0 * t) for t in range(101)]
    assert rate_early_late(steady) == {"early": 10.0, "late": 10.0, "late_over_early": 1.0}
    # 10 per second for the first 80 units of progress, then 5 per second: the last fifth is at half speed
    slowing = [(t, 10.0 * t) for t in range(9)] + [(8 + k, 80.0 + 5 * k) for k in range(1, 5)]
    rates = rate_early_late(slowing)
    assert rates["early"] == 10.0 and rates["late"] == 5.0 and rates["late_over_early"] == 0.5


def test_rate_early_late_needs_progress() -> None:
    assert rate_early_late([(0.0, 5.0), (1.0, 5.0), (2.0, 5.0), (3.0, 5.0)])["late_over_early"] is None
    assert rate_early_late([(0.0, 1.0), (1.0, 2.0)])["early"] is None


def test_train_rates_skip_the_first_record() -> None:
    # The first logged step includes start-up: it is left out of the early window.
    steps = [{"img_per_s": 1.0}] + [{"img_per_s": 10.0}] * 4 + [{"img_per_s": 8.0}] * 5
    assert train_rates(steps) == {"early": 10.0, "late": 8.0, "late_over_early": 0.8}


def test_clusters_compare_by_file_name_across_roots() -> None:
    cold = {"clusters": [["ab/abc.jpg", "cd/cde.jpg"], ["ff/ffa.jpg", "00/001.jpg"]]}
    warm = {
        "clusters": [["images/00/001.jpg", "images/ff/ffa.jpg"], ["images/cd/cde.jpg", "images/ab/abc.jpg"]]
    }
    assert (
        clusters_by_file_name(cold)
        == clusters_by_file_name(warm)
        == [["001.jpg", "ffa.jpg"], ["abc.jpg", "cde.jpg"]]
    )
    assert clusters_by_file_name({"clusters": []}) == []


def test_projection_hours_follow_flops_over_peak_times_mfu() -> None:
    flops = 26.0e9
    rows, text = projection(flops, cpu_img_per_s=12.5)
    images = REFERENCE_PROJECT["images"]
    hours_key = f"hours for {images:,} images"
    assert rows[0]["img/s"] == 12.5 and rows[0][hours_key] == round(images / 12.5 / 3600, 1)
    assert len(rows) == 1 + len(GPUS) * len(MFU_ASSUMED)
    peak = GPUS["RTX 3060 (bf16 dense)"]
    row = next(r for r in rows[1:] if r["hardware"].startswith("RTX 3060") and r["assumed MFU"] == "30%")
    assert row[hours_key] == round(images * flops / (peak * 0.30) / 3600, 2)
    assert "PROJECTION" in text


def test_run_measured_counts_the_commands_reaped_children(tmp_path: Path) -> None:
    # The child burns CPU in a grandchild it waits for (as dedupe's hashing pool does): wait4's usage
    # of the child includes it; the child's own stdout is kept for its --json.
    script = (
        "import subprocess, sys, time\n"
        "burn = 'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.6: pass'\n"
        "subprocess.run([sys.executable, '-c', burn], check=True)\n"
        "print('{\"ok\": true}')\n"
    )
    seen: list[float | None] = []
    finished = run_measured(
        [sys.executable, "-c", script],
        tmp_path,
        lambda: 1.0,
        0.05,
        lambda process, t, value: seen.append(value),
    )
    assert finished.returncode == 0 and json.loads(finished.stdout) == {"ok": True}
    assert finished.cpu_s >= 0.6
    assert finished.peak_rss_mb > 1
    assert finished.curve[-1]["progress"] == 1.0 and seen and all(v == 1.0 for v in seen)


def test_folder_usage_counts_files_and_blocks(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"1" * 10_000)
    (tmp_path / "y.png").write_bytes(b"2")
    disk, files = folder_usage(tmp_path)
    assert files == 2 and disk >= 10_000
    assert count_files(tmp_path, ".jpg") == 1


def test_last_json_line_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "stats.jsonl"
    path.write_text('{"kimg": 1.0}\n{"kimg": 2.0}\n{"kimg": 3')
    assert last_json_line(path) == {"kimg": 2.0}
    assert last_json_line(tmp_path / "missing") is None


def test_a_work_folder_of_another_plan_is_refused(tmp_path: Path) -> None:
    other = json.loads(json.dumps(Plan().__dict__)) | {"n": 10}
    (tmp_path / "plan.json").write_text(json.dumps(other))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.rehearsal", "--work", str(tmp_path), "--report-only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "another plan" in done.stderr


@pytest.mark.parametrize("flag", [["--quick"]])
def test_quick_refuses_the_committed_report_folder(tmp_path: Path, flag: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.rehearsal", "--work", str(tmp_path), *flag],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "--report-dir" in done.stderr


def test_a_stage_counts_the_cpu_of_an_orphaned_grandchild(tmp_path: Path) -> None:
    """dedupe's pool workers are children of a forkserver its parent never waits for: orphans. As a child
    subreaper the rehearsal adopts and reaps them, so their CPU is the stage's (run in a fresh process:
    becoming a subreaper would change pytest's own process)."""
    script = (
        "import json, subprocess, sys\n"
        "from pathlib import Path\n"
        "from benchmarks.rehearsal import become_subreaper, run_measured\n"
        "burn = 'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.8: pass'\n"
        "orphaner = f'import subprocess, sys; subprocess.Popen([sys.executable, \"-c\", {burn!r}])'\n"
        "become_subreaper()\n"
        "done = run_measured([sys.executable, '-c', orphaner], Path(sys.argv[1]), lambda: None, 0.05)\n"
        "print(json.dumps({'rc': done.returncode, 'cpu': done.cpu_s}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    assert result["rc"] == 0 and result["cpu"] >= 0.8


def test_kept_training_interpolates_the_states_step_on_the_loops_clock(tmp_path: Path) -> None:
    import torch

    from benchmarks.rehearsal import kept_training

    assert kept_training(tmp_path) == (0, 0.0)  # killed before any state: nothing kept
    records = [{"step": 50, "train_seconds": 200.0}, {"step": 100, "train_seconds": 450.0},
               {"kind": "eval", "step": 100, "fid": 1.0}, {"step": 150, "train_seconds": 600.0}]  # fmt: skip
    (tmp_path / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    torch.save({"step": 120}, tmp_path / "state-latest.pt")
    assert kept_training(tmp_path) == (120, 450.0 + 0.4 * 150.0)
    torch.save({"step": 170}, tmp_path / "state-latest.pt")  # past the last record: its pace
    assert kept_training(tmp_path) == (170, 600.0 + 20 * 4.0)
    torch.save({"step": 20}, tmp_path / "state-latest.pt")  # before the first record
    assert kept_training(tmp_path) == (20, 80.0)


def test_redone_evaluations_pair_the_killed_sessions_fids_with_the_resumed_runs() -> None:
    from benchmarks.rehearsal_report import redone_evaluations

    killed = {"stderr_tail": "model small ...\n4.03 kimg: FID@128 44,187.6 (reference 1000, ...)\n"
              "8.00 kimg: FID@128 1,193.5 (reference 1000, ...)\n"}  # fmt: skip
    evals = [{"kimg": 4.032, "fid": 44187.61}, {"kimg": 12.0, "fid": 900.0}]
    assert redone_evaluations(killed, evals) == [
        {"kimg": 4.03, "FID before the kill (printed)": 44187.6, "FID after the resume": 44187.6}
    ]


def _curve(cpu_ms_per_image: list[float], per_tenth: int = 100) -> list[dict[str, float]]:
    """A scrape curve whose k-th tenth of the progress costs cpu_ms_per_image[k] ms per image, sampled
    five times per tenth."""
    points, cpu, done = [{"t_s": 0.0, "progress": 0, "cpu_s": 0.0, "load1": 1.0}], 0.0, 0
    for cost in cpu_ms_per_image:
        for _ in range(5):
            done += per_tenth // 5
            cpu += cost / 1000 * per_tenth / 5
            points.append({"t_s": float(done), "progress": done, "cpu_s": cpu, "load1": 1.0})
    return points


def test_cpu_per_kept_image_by_tenth_shows_a_cost_that_grows_with_the_folder() -> None:
    from benchmarks.rehearsal_report import cpu_ms_by_tenth

    costs = [6.0 + k for k in range(10)]
    tenths = cpu_ms_by_tenth({"curve": _curve(costs)})
    assert [kept for kept, _ in tenths] == [100 * (k + 1) for k in range(10)]
    assert [ms for _, ms in tenths] == pytest.approx(costs)


def test_an_earlier_scrape_is_kept_beside_this_one_and_reported(tmp_path: Path) -> None:
    from benchmarks.rehearsal import Rehearsal
    from benchmarks.rehearsal_report import earlier_scrape_section

    now = {
        "wall_s": 10.0,
        "cpu_s": 6.5,
        "commit": "b" * 40,
        "finished_at": "now",
        "result": {"kept_total": 1000},
    }
    earlier = dict(now, cpu_s=11.0, commit="a" * 40, curve=_curve([6.0 + k for k in range(10)]))
    earlier["result"] = {"kept_total": 1000}
    (tmp_path / "earlier.json").write_text(json.dumps({"scrape": earlier}))
    (tmp_path / "work").mkdir()
    rehearsal = Rehearsal(QUICK, tmp_path / "work")
    rehearsal.save("scrape", dict(now, curve=_curve([6.5] * 10)))
    rehearsal.keep_earlier_scrape(tmp_path / "earlier.json")
    again = Rehearsal(QUICK, tmp_path / "work")  # kept on disk, in stages.json
    section, summary = earlier_scrape_section(again.records["scrape"])
    assert summary["scrape_earlier_commit"] == "a" * 10 and summary["scrape_earlier_cpu_ms_per_kept"] == 11.0
    assert summary["scrape_earlier_cpu_rate_late_over_early"] == pytest.approx(6.5 / 14.5, abs=0.002)
    assert [row["CPU ms / kept (earlier)"] for row in section.table] == pytest.approx(
        [6.0 + k for k in range(10)]
    )
    assert [row["CPU ms / kept (this run)"] for row in section.table] == pytest.approx([6.5] * 10)
