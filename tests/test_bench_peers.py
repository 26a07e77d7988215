"""bench_quality's peers under the peer protocol (docs/benchmarks.md): matched sizes, measured budgets,
the peers' own samplers from shared noise, budget-scaled warm-up and sweeps as large as diffkit's tuning.

Tiny sizes only: every test runs in seconds on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("denoising_diffusion_pytorch")

from diffkit.models.config import preset_config
from diffkit.models.stats import count_parameters
from diffkit.models.unet import UNet

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/ is a package of the repository root (as `python -m benchmarks.x` sees it from there)."""
    monkeypatch.syspath_prepend(str(ROOT))


def _images(n: int = 24) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _burn(seconds: float) -> float:
    """A step that spends about ``seconds`` of process CPU time."""
    started = time.process_time()
    while time.process_time() - started < seconds:
        pass
    return 0.0


# ------------------------------------------------------------------------------------ matched size


def test_ddpm_unet_is_within_two_percent_of_diffkit_tiny() -> None:
    from benchmarks import _quality_ddpm as ddpm

    ours = count_parameters(UNet(preset_config("tiny", 32)))
    theirs = count_parameters(ddpm.build_diffusion(4).model)
    assert abs(theirs / ours - 1) <= 0.02, (theirs, ours)


def test_ddpm_sampler_from_given_noise_is_the_library_ddim() -> None:
    """Our loop from shared noise = ``GaussianDiffusion.ddim_sample`` drawing the same noise itself."""
    from benchmarks import _quality_ddpm as ddpm

    torch.manual_seed(3)
    diffusion = ddpm.build_diffusion(sample_steps=3).eval()
    torch.manual_seed(11)
    library = diffusion.ddim_sample((2, 3, 32, 32))
    torch.manual_seed(11)
    noise = torch.randn(2, 3, 32, 32)
    images, final = ddpm.ddim_sample(diffusion, noise, batch_size=1)
    assert torch.allclose(final, library, atol=1e-6)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8


def test_ddpm_trainer_is_the_trainers_defaults_and_flips_per_image() -> None:
    from benchmarks import _quality_ddpm as ddpm

    trainer = ddpm.DdpmTrainer(_images(), seed=0, sample_steps=2)
    group = trainer.optimizer.param_groups[0]
    assert isinstance(trainer.optimizer, torch.optim.Adam) and not isinstance(
        trainer.optimizer, torch.optim.AdamW
    )
    assert (group["lr"], group["betas"]) == (1e-4, (0.9, 0.99))
    assert (trainer.ema.beta, trainer.ema.update_every) == (0.995, 10)
    batch = trainer.next_batch()
    originals = torch.from_numpy(_images()[trainer.order[:16].numpy()]).permute(0, 3, 1, 2).float() / 255
    same = (batch == originals).flatten(1).all(1)
    mirrored = (batch == originals.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 16
    assert float(batch.min()) >= 0 and float(batch.max()) <= 1  # [0, 1]: the library normalises itself


# ----------------------------------------------------------------------------------- measured budget


def test_clocked_steps_stop_after_the_step_that_uses_the_budget_up() -> None:
    from benchmarks._quality_job import clocked_steps

    losses, spent = clocked_steps(lambda: _burn(0.02), budget_s=0.1, max_steps=1000)
    assert 0.1 <= spent < 0.1 + 0.05  # stopped on the clock, at most one step late
    assert 4 <= len(losses) <= 6
    losses, spent = clocked_steps(lambda: _burn(0.02), budget_s=10.0, max_steps=3)
    assert len(losses) == 3 and spent < 1.0  # a planned schedule's end stops it first


def test_cpu_clock_counts_process_time_not_waiting() -> None:
    from benchmarks._quality_job import CpuClock

    clock = CpuClock(0.05)
    time.sleep(0.2)  # wall time passes, the process spends none
    assert not clock.expired()
    _burn(0.06)
    assert clock.expired()


def test_diffkit_job_stops_on_its_own_max_cpu_seconds(tmp_path: Path) -> None:
    """diffkit's job trains through ``TrainConfig.max_cpu_seconds`` (no patched stop signal) and records
    the CPU seconds its loop measured at the stop and the steps it trained."""
    from benchmarks._quality_job import STEP_CAP_FACTOR, run_job
    from diffkit.fakesite.faces import write_face_folder
    from diffkit.testing.inception import make_inception_weights
    from diffkit.train import loop
    from diffkit.train.monitor import StopOnInterrupt

    write_face_folder(tmp_path / "faces", 8, size=32, seed=0)
    make_inception_weights(tmp_path / "inception.pt", _images(8), seed=0)
    spec = {
        "kind": "train", "contender": "diffkit", "variant": "diffkit", "budget_s": 1.0, "seed": 0,
        "overrides": {"batch_size": 4}, "train_dir": str(tmp_path / "faces"),
        "weights": str(tmp_path / "inception.pt"), "n_samples": 2, "sample_seed": 0, "pilot_steps": 4,
        "out": str(tmp_path / "job"),
    }  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    threads = torch.get_num_threads()
    try:
        run_job(tmp_path / "spec.json")
    finally:
        torch.set_num_threads(threads)
    assert loop.StopOnInterrupt is StopOnInterrupt  # nothing of diffkit's loop is patched
    result = json.loads((tmp_path / "job" / "result.json").read_text())
    assert result["config"]["max_cpu_seconds"] == 1.0
    assert result["stopped_by_clock"] and 1 <= result["steps"] < result["predicted_steps"] * STEP_CAP_FACTOR
    assert 1.0 <= result["train_cpu_s"] < 1.0 + 5.0  # the loop's clock at the stop, not after saving
    assert result["images_seen"] == 4 * result["steps"]
    assert np.load(tmp_path / "job" / "samples.npy").shape == (2, 32, 32, 3)


def test_trained_cpu_seconds_reads_the_budget_stop_or_falls_back_to_the_whole_call() -> None:
    from types import SimpleNamespace

    from benchmarks._quality_job import trained_cpu_seconds
    from diffkit.train.budget import CPU, WALL

    stop = {"reason": CPU, "cpu_seconds": 12.5, "wall_seconds": 30.0}
    assert trained_cpu_seconds(SimpleNamespace(budget_stop=stop), 14.0) == (12.5, True)
    wall = {"reason": WALL, "cpu_seconds": 3.0}  # not the benchmark's clock: not a clock stop
    assert trained_cpu_seconds(SimpleNamespace(budget_stop=wall), 4.0) == (4.0, False)
    assert trained_cpu_seconds(SimpleNamespace(budget_stop=None), 9.0) == (9.0, False)  # the step cap


def test_ddpm_job_runs_end_to_end(tmp_path: Path) -> None:
    """One lucidrains job as bench_quality starts it: clocked training, shared-noise samples, features."""
    from benchmarks._quality_job import run_job
    from diffkit.fakesite.faces import write_face_folder
    from diffkit.testing.inception import make_inception_weights

    write_face_folder(tmp_path / "faces", 16, size=32, seed=0)
    make_inception_weights(tmp_path / "inception.pt", _images(8), seed=0)
    spec = {
        "kind": "train", "contender": "ddpm", "variant": "ddpm", "budget_s": 0.5, "seed": 0,
        "overrides": {}, "setting": {"batch_size": 4, "lr": 3e-4, "ema_decay": 0.99},
        "train_dir": str(tmp_path / "faces"), "weights": str(tmp_path / "inception.pt"), "n_samples": 2,
        "sample_seed": 0, "pilot_steps": 3, "out": str(tmp_path / "job"),
    }  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    threads = torch.get_num_threads()
    try:
        run_job(tmp_path / "spec.json")
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "job" / "result.json").read_text())
    assert result["train_cpu_s"] >= 0.5 and result["steps"] >= 1 and result["stopped_by_clock"]
    assert result["setting"] == "b4_lr0.0003_ema0.99" and result["images_seen"] == 4 * result["steps"]
    assert abs(result["params"] / count_parameters(UNet(preset_config("tiny", 32))) - 1) <= 0.02
    samples = np.load(tmp_path / "job" / "samples.npy")
    assert samples.shape == (2, 32, 32, 3) and samples.dtype == np.uint8
    with np.load(tmp_path / "job" / "features.npz") as features:
        assert features["pixels"].shape == (2, 192) and features["inception"].shape == (2, 2048)


# ---------------------------------------------------------------------------------- recipe settings


def test_recipe_warmup_scales_with_the_planned_run() -> None:
    from benchmarks import _quality_recipe as recipe

    assert recipe.SHIPPED.warmup_steps(300) == 500  # as shipped: never reaches its peak in 300 steps
    assert recipe.SCALED.warmup_steps(300) == 30
    assert recipe.SCALED.warmup_steps(100_000) == 500  # never longer than the script's own
    trainer = recipe.RecipeTrainer(_images(), preset_config("tiny", 32), 300, 0, False, recipe.SCALED)
    lrs = []
    for _ in range(31):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert lrs[15] == pytest.approx(1e-4 * 15 / 30) and lrs[30] == pytest.approx(1e-4, rel=1e-3)


def test_recipe_setting_sets_the_batch_and_lr() -> None:
    from benchmarks import _quality_recipe as recipe

    setting = recipe.RecipeSetting(batch_size=32, lr=1e-3, warmup_fraction=0.02)
    trainer = recipe.RecipeTrainer(_images(40), preset_config("tiny", 32), 100, 0, False, setting)
    assert [len(trainer.next_batch()) for _ in range(2)] == [32, 8]
    assert trainer.optimizer.param_groups[0]["initial_lr"] == 1e-3
    assert setting.name == "b32_lr0.001_wu0.02"


@pytest.mark.parametrize("peer", ["recipe", "ddpm"])
def test_peer_sweep_is_as_large_as_diffkits_lever_runs(peer: str) -> None:
    """The protocol's tuning budget: the committed lever reports trained 12 settings besides their
    baselines, so each peer sweeps 12 distinct settings besides its defaults."""
    from benchmarks.bench_quality import BASELINE, lever_trainings, peer_settings

    settings = peer_settings(peer)
    assert BASELINE in settings
    assert len(settings) - 1 == lever_trainings(ROOT / "reports") == 12
    assert len({json.dumps(s, sort_keys=True) for s in settings.values()}) == len(settings)


def test_recipe_sweep_turns_lr_warmup_and_batch() -> None:
    from benchmarks.bench_quality import BASELINE, peer_settings

    swept = [setting for name, setting in peer_settings("recipe").items() if name != BASELINE]
    for knob in ("lr", "warmup_fraction", "batch_size"):
        assert len({s[knob] for s in swept}) >= 2, knob


# ------------------------------------------------------------------------------------------ report


def _sweep_report(tmp_path: Path, ratios: dict[str, tuple[float, float]]) -> Path:
    rows = [
        {"variant": name, "budget_s": b, "fd_pixels_vs_baseline": px, "fd_inception_vs_baseline": inc}
        for name, (px, inc) in ratios.items()
        for b in (10.0, 30.0)
    ]
    (tmp_path / "bench_quality_sweep_recipe.json").write_text(json.dumps({"data": {"rows": rows}}))
    return tmp_path


def test_best_swept_setting_must_win_in_both_spaces(tmp_path: Path) -> None:
    from benchmarks.bench_quality import best_swept_setting

    # "a" wins the pixels by a little and loses the Inception space badly: "b" is better in both on average
    report_dir = _sweep_report(tmp_path, {"defaults": (1, 1), "a": (0.7, 1.4), "b": (0.8, 0.8)})
    assert best_swept_setting(report_dir, "recipe") == "b"
    assert best_swept_setting(report_dir, "ddpm") is None  # no sweep report: no tuned contender


def _row(contender: str, budget: float, pixels: float, inception: float) -> dict[str, Any]:
    return {"contender": contender, "budget_s": budget, "fd_pixels": pixels, "fd_inception": inception}


def test_peer_goals_compare_with_the_best_peer_and_with_the_defaults() -> None:
    from benchmarks.bench_quality import peer_goals

    rows = [
        _row("diffkit", 10, 0.3, 30), _row("diffkit", 30, 0.2, 20),
        _row("recipe-fp32", 10, 0.9, 90), _row("recipe-fp32", 30, 0.5, 50),
        _row("recipe-tuned", 10, 0.4, 70), _row("recipe-tuned", 30, 0.25, 40),
        _row("ddpm", 10, 0.6, 35), _row("ddpm", 30, 0.35, 25),
    ]  # fmt: skip
    goals = peer_goals(rows, {"fd_pixels": 0.1, "fd_inception": 10}, 10)
    assert goals["best_peer_pixels_B"] == "recipe-tuned" and goals["best_peer_inception_B"] == "ddpm"
    assert goals["vs_best_peer_gap_ratio_pixels_B"] == pytest.approx(0.2 / 0.3, abs=1e-3)
    assert goals["vs_best_peer_gap_ratio_inception_3B"] == pytest.approx(10 / 15, abs=1e-3)
    assert goals["vs_peer_defaults_recipe_fp32_gap_ratio_pixels_B"] == pytest.approx(0.2 / 0.8, abs=1e-3)
    assert goals["vs_peer_defaults_ddpm_gap_ratio_inception_B"] == pytest.approx(20 / 25, abs=1e-3)
    # diffkit at B (0.3) against the best peer at 3B (recipe-tuned 0.25): not reached in pixels
    assert goals["vs_best_peer_diffkit_at_B_reaches_best_peer_at_3B_pixels"] is False
    assert goals["vs_best_peer_diffkit_at_B_reaches_best_peer_at_3B_inception"] is False  # 30 > 25


def test_one_budget_sweep_trains_each_setting_at_b_only(tmp_path: Path) -> None:
    from benchmarks import bench_quality

    def plan(*extra: str) -> list[Any]:
        import argparse

        args = argparse.Namespace(
            budget=40.0, seeds=[0], n_samples=16, n_reference=16, pilot_steps=2, sample_seed=0,
            levers=False, peer_sweep="recipe", baseline="defaults", report_dir=tmp_path, one_budget=False,
        )  # fmt: skip
        for flag in extra:
            setattr(args, flag, True)
        return bench_quality.plan_jobs(args, bench_quality.Scratch(tmp_path, 1))

    both, one = plan(), plan("one_budget")
    trained = [job for job in one if job.kind == "train"]
    assert len(trained) == 13 and {job.spec["budget_s"] for job in trained} == {40.0}
    assert {job.spec["budget_s"] for job in both if job.kind == "train"} == {40.0, 120.0}
    assert len([job for job in both if job.kind == "train"]) == 26


def test_a_rerun_keeps_only_finished_jobs_with_the_same_spec(tmp_path: Path) -> None:
    from benchmarks.bench_quality import Job, finished_result

    spec = {"kind": "train", "budget_s": 120.0, "setting": {"lr": 1e-4}, "out": str(tmp_path / "a")}
    job = Job("a", "train", spec, 1.0)
    assert finished_result(job) is None  # never started
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "spec.json").write_text(json.dumps(spec))
    assert finished_result(job) is None  # started, not finished: no result.json
    (tmp_path / "a" / "result.json").write_text(json.dumps({"steps": 7}))
    assert finished_result(job) == {"steps": 7}
    changed = Job("a", "train", spec | {"setting": {"lr": 3e-4}}, 1.0)
    assert finished_result(changed) is None  # a changed setting trains again


def test_tuned_choices_name_the_sweeps_best_or_the_given_setting(tmp_path: Path) -> None:
    import argparse

    from benchmarks.bench_quality import tuned_choices

    report_dir = _sweep_report(tmp_path, {"defaults": (1, 1), "b16_lr0.001_wu0.1": (0.8, 0.8)})
    args = argparse.Namespace(report_dir=report_dir, recipe_setting=None, ddpm_setting=None)
    assert tuned_choices(args) == {"recipe": "b16_lr0.001_wu0.1"}  # no ddpm sweep: no ddpm-tuned
    args.ddpm_setting = "b32_lr0.0003_ema0.99"
    assert tuned_choices(args) == {"recipe": "b16_lr0.001_wu0.1", "ddpm": "b32_lr0.0003_ema0.99"}
    args.ddpm_setting = "b64"
    with pytest.raises(SystemExit, match="not one of"):
        tuned_choices(args)


def test_sweep_readings_show_only_the_budgets_trained() -> None:
    from benchmarks.readings import quality

    def row(name: str, budget: float, pixels: float) -> dict[str, Any]:
        return {"variant": name, "budget_s": budget, "seeds": 1, "fd_pixels": pixels, "fd_pixels_min": pixels,
                "fd_pixels_max": pixels, "fd_inception": 10 * pixels, "fd_inception_min": 10 * pixels,
                "fd_inception_max": 10 * pixels, "gap_fd_pixels": pixels - 0.5,
                "gap_fd_inception": 10 * pixels - 5}  # fmt: skip

    summary = {"budget_s": 120.0, "budget_3x_s": 360.0, "seeds": [0], "n_train": 2000, "resolution": 32,
               "n_samples": 128, "workers": 2, "floor_fd_pixels": 0.5, "floor_fd_inception": 5.0,
               "baseline": "defaults", "budget_used_min": 0.95, "budget_used_max": 1.004,
               "budget_clock": "process CPU seconds"}  # fmt: skip
    report = {"summary": summary, "created": "now", "data": {"rows": [row("defaults", 120.0, 2.5),
              row("b32_lr0.001_wu0.1", 120.0, 1.5)]}}  # fmt: skip
    assert quality.trained_budgets(report) == [120.0]
    headline = quality.levers_headline(report)
    assert "120 s of training" in headline and "360" not in headline
    assert "b32_lr0.001_wu0.1 1.5;" not in headline and headline.endswith("b32_lr0.001_wu0.1 1.5")
    assert "1 seed;" in headline and headline.startswith("one change each from `defaults`")
    # a sweep's setting moves several knobs at once: not "one change each"
    sweep = {**report, "summary": {**summary, "mode": "peer_sweep"}}
    assert quality.levers_headline(sweep).startswith("each setting against `defaults`, 120 s of training")
    block = quality.levers_block(report)
    assert "360" not in block and "budget 120 s (jobs trained 0.95-1.00x their budget)," in block
    # a lever report from before the measured budgets says its jobs ran planned step counts
    planned = {**summary}
    del planned["budget_clock"]
    old = quality.levers_block({**report, "summary": planned})
    assert "(jobs trained 0.95-1.00x their budget, step counts planned from pilot steps)" in old
    # the swept setting's distance to the floor over the defaults': (1.5 - 0.5) / (2.5 - 0.5) = 0.50
    assert "| `b32_lr0.001_wu0.1` | 1.5 (0.50) | 15 (0.50) |" in block


# ------------------------------------------------------------------------------------- bench_train


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_diffusers_twin_is_within_two_percent_of_diffkit(preset: str) -> None:
    from benchmarks.twins import diffusers_twin

    for resolution in (32, 64):
        config = preset_config(preset, resolution)
        ours, theirs = count_parameters(UNet(config)), count_parameters(diffusers_twin(config))
        assert abs(theirs / ours - 1) <= 0.02, (preset, resolution, theirs, ours)


def test_bench_train_runs_diffusers_with_fused_adamw_too() -> None:
    """The peer protocol's row: the same optimizer flag on both sides."""
    from benchmarks.bench_train import PEER_FUSED
    from benchmarks.twins import SHIPPED, build_trainer

    config = preset_config("tiny", 32)
    for kind, fused in ((PEER_FUSED, True), (SHIPPED, True), ("diffusers", None), ("diffkit", None)):
        trainer = build_trainer(kind, config, batch=1, dtype=None)
        assert trainer.optimizer.defaults["fused"] is fused, kind
    assert type(build_trainer(PEER_FUSED, config, 1, None).model).__name__ == "UNet2DModel"


# ------------------------------------------------------------------------ the comparison's report


def _fake_comparison(tmp_path: Path, shifts: dict[str, float]) -> tuple[Any, list[Any]]:
    """The comparison's queue as planned (both peers tuned by their sweeps' reports), each job's outputs
    written as a finished job would leave them: features shifted by ``shifts[contender]`` (further from the
    reference = worse), so every contender's distances are its own."""
    from benchmarks import bench_quality

    (tmp_path / "reports").mkdir()
    report_dir = _sweep_report(tmp_path / "reports", {"defaults": (1, 1), "b32_lr0.001_wu0.1": (0.8, 0.8)})
    recipe_sweep = (report_dir / "bench_quality_sweep_recipe.json").read_text()
    ddpm_sweep = recipe_sweep.replace("b32_lr0.001_wu0.1", "b32_lr0.0003_ema0.99")
    (report_dir / "bench_quality_sweep_ddpm.json").write_text(ddpm_sweep)
    args = bench_quality.build_parser().parse_args(
        ["--budget", "10", "--n-samples", "16", "--report-dir", str(report_dir),
         "--contenders", "diffkit", "recipe-fp32", "recipe-scaled", "ddpm"]
    )  # fmt: skip
    scratch = bench_quality.Scratch(tmp_path / "work", 1)
    jobs = bench_quality.plan_jobs(args, scratch)
    rng = np.random.default_rng(0)

    def features(shift: float, n: int = 16) -> dict[str, np.ndarray]:
        return {"inception": rng.normal(shift, 1, (n, 6)), "pixels": rng.normal(shift / 10, 0.1, (n, 4))}

    for name, out, shift in (("reference", "reference", 0.0), ("floor0", "floor", 0.05)):
        folder = scratch.work / "jobs" / out
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"{name}-features.npz", **features(shift))
    for job in jobs:
        if job.kind != "train":
            continue
        out = Path(job.spec["out"])
        out.mkdir(parents=True)
        np.savez(out / "features.npz", **features(shifts[job.spec["variant"]]))
        np.save(out / "samples.npy", _images(16))
        job.result = {
            "train_seconds": 10.2, "train_cpu_s": 10.1, "steps": 30, "images_seen": 480, "train_pflops": 0.01,
            "final_loss": 0.1, "load_before": [0.5], "load_after": [0.6], "params": 1000,
            "flops_forward_per_image": 2e9,
        }  # fmt: skip
    return args, jobs


def test_the_comparison_keeps_each_contender_apart_and_names_the_best_peer(tmp_path: Path) -> None:
    from benchmarks import bench_quality
    from benchmarks.readings import quality

    shifts = {"diffkit": 0.5, "recipe-fp32": 3.0, "recipe-scaled": 2.0, "recipe-tuned": 0.8, "ddpm": 2.5,
              "ddpm-tuned": 1.0}  # fmt: skip
    args, jobs = _fake_comparison(tmp_path, shifts)
    kinds = {job.spec["variant"]: job.spec["contender"] for job in jobs if job.kind == "train"}
    # the tuned recipe runs with its bf16 flag; recipe-scaled is the shipped recipe's fp32 with a warm-up
    assert kinds == {"diffkit": "diffkit", "recipe-fp32": "recipe-fp32", "recipe-scaled": "recipe-fp32",
                     "ddpm": "ddpm", "recipe-tuned": "recipe-bf16", "ddpm-tuned": "ddpm"}  # fmt: skip
    prepared = {"train": _images(32), "reference": _images(32)}
    report = bench_quality.build_report(
        args, jobs, prepared, bench_quality.Scratch(tmp_path / "work", 1), 60.0, 60.0,
        {"before": [0.5, 0.5, 0.5], "after": [0.6, 0.6, 0.6]},
    )  # fmt: skip
    rows = report.data["rows"]
    # one row per contender and budget: two seeds each, never pooled across contenders of one job kind
    assert sorted((r["contender"], r["budget_s"], r["seeds"]) for r in rows) == sorted(
        (name, budget, 2) for name in shifts for budget in (10.0, 30.0)
    )
    fd = {(r["contender"], r["budget_s"]): r["fd_inception"] for r in rows}
    assert fd[("recipe-scaled", 10.0)] < fd[("recipe-fp32", 10.0)]  # 2.0 against 3.0 from the reference
    s = report.summary
    assert (
        s["recipe_tuned_setting"] == "b32_lr0.001_wu0.1" and s["ddpm_tuned_setting"] == "b32_lr0.0003_ema0.99"
    )
    assert s["best_peer_inception_B"] == "recipe-tuned" and s["best_peer_pixels_3B"] == "recipe-tuned"
    assert s["vs_best_peer_gap_ratio_inception_B"] < 1  # diffkit (0.5) nearer than the tuned recipe (0.8)
    # the readings the docs show: every contender in the table, the best peer named in the headline
    traced = json.loads(json.dumps({"summary": s, "data": report.data, "created": "now"}))
    block, headline = quality.block(traced), quality.headline(traced)
    assert all(f"`{name}`" in block for name in shifts)
    assert "`recipe-tuned`" in headline
    # the compute each row trained, in FLOPs beside the seconds (matched parameters, not matched FLOPs)
    assert "| `ddpm` | 10 s | 10 | 30 | 480 | 0.01 |" in block


def test_the_comparison_says_where_diffkit_loses(tmp_path: Path) -> None:
    from benchmarks import bench_quality
    from benchmarks.readings import quality

    # the tuned lucidrains Trainer ends nearer the reference than diffkit
    shifts = {"diffkit": 1.0, "recipe-fp32": 3.0, "recipe-scaled": 2.0, "recipe-tuned": 1.5, "ddpm": 2.5,
              "ddpm-tuned": 0.4}  # fmt: skip
    args, jobs = _fake_comparison(tmp_path, shifts)
    prepared = {"train": _images(32), "reference": _images(32)}
    report = bench_quality.build_report(
        args, jobs, prepared, bench_quality.Scratch(tmp_path / "work", 1), 60.0, 60.0,
        {"before": [0.5, 0.5, 0.5], "after": [0.6, 0.6, 0.6]},
    )  # fmt: skip
    s = report.summary
    assert s["best_peer_inception_B"] == "ddpm-tuned" and s["vs_best_peer_gap_ratio_inception_B"] > 1
    traced = json.loads(json.dumps({"summary": s, "data": report.data, "created": "now"}))
    assert "diffkit loses" in quality.block(traced)


def test_a_tie_with_the_best_peer_is_not_a_loss() -> None:
    from benchmarks.readings import quality

    def row(name: str, budget: float, gap: float) -> dict[str, Any]:
        return {"contender": name, "budget_s": budget, "gap_fd_pixels": gap, "gap_fd_inception": gap}

    summary = {"budget_s": 10.0, "budget_3x_s": 30.0}
    summary |= {
        f"best_peer_{space}_{tag}": "ddpm-tuned" for space in ("pixels", "inception") for tag in ("B", "3B")
    }
    rows = [row("diffkit", 10.0, 0.5), row("ddpm-tuned", 10.0, 0.5), row("diffkit", 30.0, 0.2),
            row("ddpm-tuned", 30.0, 0.25)]  # fmt: skip
    report = {"summary": summary, "data": {"rows": rows}}
    assert quality.losses(report) == []  # 0.5 against 0.5 at 10 s: a tie
    assert quality.verdict(report).startswith("diffkit is at least as near the floor as every peer row")
    rows[1]["gap_fd_inception"] = 0.49  # the peer a hair nearer in one space, at one budget
    assert quality.losses(report) == ["to `ddpm-tuned` in Inception space at 10 s"]
    assert quality.verdict(report) == "diffkit loses to `ddpm-tuned` in Inception space at 10 s"
