"""The eval report and summary: one number format, FID with its N / reference / engine / weights,
a FID-infinity fit that cannot be trusted flagged, too few bootstrap replicates warned about, and a
sample grid large enough to judge. Built from a result made here (no InceptionV3 run needed)."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffkit.eval.config import EvalConfig
from diffkit.eval.report import GRID_WIDTH_PX, build_report
from diffkit.eval.result import EvalResult
from diffkit.fakesite.faces import write_face_folder
from diffkit.metrics import caveats as cav
from diffkit.metrics.fid import FastFrechet, frechet_distance
from diffkit.metrics.images import describe_set, select_images


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.pictures: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img" and "picture" in (attributes.get("class") or ""):
            self.pictures.append(attributes.get("src") or "")


def _curve(slope: float, noise: float) -> dict:
    sizes = [12, 20, 40, 60, 96]
    rng = np.random.default_rng(0)
    fids = [100.0 + slope / size + noise * rng.standard_normal() for size in sizes]
    fit_slope, intercept = np.polyfit(1 / np.array(sizes), fids, 1)
    x = 1 / np.array(sizes)
    r2 = cav.r_squared(x, np.array(fids), fit_slope, intercept)
    return {"sizes": sizes, "fids": fids, "slope": float(fit_slope), "intercept": float(intercept), "r2": r2}


def test_fid_curve_r2_equals_an_independent_computation_and_flags_bad_fits() -> None:
    generated = np.random.default_rng(1).standard_normal((96, 8))
    reference = np.random.default_rng(2).standard_normal((96, 8))
    curve = cav.fid_curve(generated, FastFrechet(reference), seed=3)
    x, y = 1 / np.array(curve.sizes), np.array(curve.fids)
    assert curve.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-9)  # R² of a line = r²
    negative = cav.FidCurve([10, 20], [5.0, 6.0], slope=-20.0, intercept=7.0, r2=1.0)
    assert negative.problems() and "negative slope" in negative.problems()[0]
    poor = cav.FidCurve([10, 20], [5.0, 6.0], slope=20.0, intercept=7.0, r2=cav.MIN_FIT_R2 - 0.01)
    assert poor.problems() == [f"poor linear fit (R² {cav.MIN_FIT_R2 - 0.01:.2f} < {cav.MIN_FIT_R2})"]
    exact = cav.FidCurve([10, 20], [5.0, 6.0], slope=20.0, intercept=7.0, r2=cav.MIN_FIT_R2)
    assert exact.problems() == []  # the threshold itself is trusted
    notes = "\n".join(cav.fid_caveats(96, 96, None, negative, 6.0))
    assert "FID-infinity estimate 7 cannot be trusted: negative slope" in notes


def test_bootstrap_warnings() -> None:
    few = cav.bootstrap_caveats("KID", 5, 0.30, (0.10, 0.25))
    assert len(few) == 2
    assert "Only 5 bootstrap replicates" in few[0] and "0.1 replicates per tail" in few[0]
    assert "KID estimate 0.3 lies outside its own 95% interval [0.1, 0.25]" in few[1]
    assert cav.bootstrap_caveats("KID", cav.MIN_BOOTSTRAP, 0.2, (0.1, 0.25)) == []
    assert len(cav.bootstrap_caveats("FID", cav.MIN_BOOTSTRAP - 1, 0.2, (0.1, 0.25))) == 1
    assert cav.bootstrap_caveats("FID", 5, 0.2, None) == []  # --bootstrap 0: no interval, nothing to say


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("eval-report")
    write_face_folder(root / "gen", 96, size=32, seed=1)
    write_face_folder(root / "ref", 24, size=32, seed=2)
    gen = describe_set(root / "gen", select_images(root / "gen", 96, "generated"), 32)
    ref = describe_set(root / "ref", select_images(root / "ref", 24, "reference"), 32)
    return root, gen, ref


def _result(curve: dict, official: bool) -> EvalResult:
    result = EvalResult(96, 24, "torch-fidelity", "tf-bilinear", ["fid", "kid"], "gen", "ref", 32)
    result.fid, result.fid_label, result.fid_ci95 = 7399.032085, "FID@96 (reference 24)", [7380.5, 7425.25]
    result.fid_curve, result.fid_infinity = curve, curve["intercept"]
    result.fid_infinity_problems = cav.FidCurve(
        curve["sizes"], curve["fids"], curve["slope"], curve["intercept"], curve["r2"]
    ).problems()
    result.kid_mean, result.kid_std, result.kid_ci95 = 159.043451, 13.539717, [100.4, 209.8]
    result.kid_subset_size, result.kid_subsets = 24, 100
    result.weights = {"inception": {"official": official, "sha256": "ab" * 32}}
    result.caveats = cav.bootstrap_caveats("KID", 5, 300.0, (100.4, 209.8))
    return result


def test_eval_report_numbers_flags_and_grid(sets, tmp_path: Path) -> None:
    root, gen, ref = sets
    result = _result(_curve(slope=-4000.0, noise=1.0), official=False)
    config = EvalConfig(
        generated=root / "gen", reference=root / "ref", report=tmp_path / "eval.html", bootstrap=5
    )
    paths = build_report(config, result, gen, ref, None)
    html = paths.html.read_text(encoding="utf-8")
    headline = "FID@96 7,399.0 (reference 24, torch-fidelity, unofficial weights)"
    assert result.fid_headline() == headline and headline in html
    assert json.loads(paths.json.read_text())["headline"] == headline
    # one number format: no six-decimal strings beside comma-grouped ones (exact values stay in data-value)
    shown = re.sub(r'data-value="[^"]*"', "", html)
    assert "7399.03" not in shown and "13.539717" not in shown and "159.04" not in shown
    assert ">159 ± 13.54<" in html and "7,380.5 – 7,425.2" in html
    assert "FID infinity untrusted" in html  # the summary key says so too
    assert "FID∞ (untrusted fit)" in html and "FID∞ fit untrusted" in html and "negative slope" in html
    assert "too few bootstrap replicates" in html and "Only 5 bootstrap replicates" in html
    page = _Page()
    page.feed(html)
    grid = Image.open(io.BytesIO(base64.b64decode(page.pictures[0].split(",", 1)[1])))
    assert GRID_WIDTH_PX * 0.75 <= grid.width <= 1024  # was 272 px for 64 samples of 32 px
    lines = "\n".join(result.summary_lines())
    assert headline in lines and "unofficial weights" in lines.splitlines()[0]
    assert "(untrusted: negative slope" in lines and "95% CI [7,380.5 – 7,425.2]" in lines


def test_a_sound_fit_is_presented_as_an_estimate(sets, tmp_path: Path) -> None:
    root, gen, ref = sets
    result = _result(_curve(slope=4000.0, noise=0.01), official=True)
    assert result.fid_infinity_problems == [] and result.weights_status == "official weights"
    config = EvalConfig(generated=root / "gen", reference=root / "ref", report=tmp_path / "eval.html")
    html = build_report(config, result, gen, ref, None).html.read_text(encoding="utf-8")
    assert "FID∞ (estimate)" in html and "untrusted" not in html and "unofficial weights" not in html
    assert "(reference 24, torch-fidelity, official weights)" in html


def test_a_fid_interval_below_zero_is_clipped_and_marked(sets, tmp_path: Path) -> None:
    """Generated and reference from one distribution: FID is small and its centred bootstrap spread
    reaches below 0, a value a Fréchet distance cannot take."""
    from diffkit.eval.run import _Features, _fid

    root, gen, ref = sets
    rng = np.random.default_rng(0)
    generated, reference = rng.standard_normal((40, 2)), rng.standard_normal((400, 2))
    estimate = frechet_distance(generated, reference)
    raw = cav.percentile_interval(
        cav.fid_bootstrap(generated, FastFrechet(reference), 60, 1), centre=estimate
    )
    assert raw[0] < 0 < estimate  # the case the clipping is for, computed independently here
    config = EvalConfig(generated=root / "gen", reference=root / "ref", bootstrap=60, seed=0)
    result = EvalResult(40, 400, "torch-fidelity", "", ["fid"], "gen", "ref", 32)
    _fid(config, result, _Features(gen=generated, ref=reference), None)
    assert result.fid == pytest.approx(estimate, rel=1e-9)
    assert result.fid_ci95 == [0.0, pytest.approx(raw[1], rel=1e-9)] and result.fid_ci95_clipped
    assert any("clipped at 0" in note and "within sampling noise of 0" in note for note in result.caveats)
    assert "95% CI [0 (clipped) – " in "\n".join(result.summary_lines())
    config = EvalConfig(generated=root / "gen", reference=root / "ref", report=tmp_path / "eval.html")
    html = build_report(config, result, gen, ref, None).html.read_text(encoding="utf-8")
    assert "0 (clipped at 0) – " in html and "FID interval clipped at 0" in html
    assert result.to_dict()["fid_ci95_clipped"] is True


def test_fd_infinity_and_intervals_are_computed_and_named_in_the_dinov2_space(sets, tmp_path: Path) -> None:
    from diffkit.eval.run import _Features, _fid

    root, gen, ref = sets
    rng = np.random.default_rng(3)
    generated, reference = rng.standard_normal((96, 12)) + 0.5, rng.standard_normal((120, 12))
    config = EvalConfig(
        generated=root / "gen", reference=root / "ref", features="dinov2", bootstrap=30, seed=2
    )
    result = EvalResult(96, 120, "torch-fidelity", "", ["fid"], "gen", "ref", 32, features="dinov2")
    _fid(config, result, _Features(gen=generated, ref=reference), None)
    curve = cav.fid_curve(generated, FastFrechet(reference), seed=4)  # seed + 2, on these very features
    boot = cav.fid_bootstrap(generated, FastFrechet(reference), 30, seed=3)  # seed + 1
    assert result.fid == pytest.approx(frechet_distance(generated, reference), rel=1e-9)
    assert result.fid_infinity == pytest.approx(curve.intercept, rel=1e-9)
    assert result.fid_ci95 == pytest.approx(list(cav.percentile_interval(boot, centre=result.fid)), rel=1e-9)
    assert result.fid_label == "FD_DINOv2@96 (reference 120)"
    notes = "\n".join(result.caveats)
    assert "FD_DINOv2-infinity estimate" in notes and "96 samples < 1024 feature dimensions" in notes
    assert "FID" not in notes  # every label names the space
    assert result.fid_infinity_text().startswith("FD_DINOv2∞ ≈ ")
    config = EvalConfig(generated=root / "gen", reference=root / "ref", report=tmp_path / "eval.html")
    html = build_report(config, result, gen, ref, None).html.read_text(encoding="utf-8")
    assert "FD_DINOv2 vs 1/N" in html and "FD_DINOv2∞" in html and "FD_DINOv2@96" in html
