"""bench_eval's reading: ``diffkit eval`` against ``torch_fidelity.calculate_metrics`` on the same folders."""

from __future__ import annotations

from typing import Any

from benchmarks.readings.figures import table

REPORT = "eval"
COMMAND = "python -m benchmarks.bench_eval"
PEER = "`torch_fidelity.calculate_metrics`"


def headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"{s['n_generated']} vs {s['n_reference']} images: cold {s['cold_ratio']:.2f}x the time, "
        f"cached rerun {s['rerun_ratio']:.2f}x; FID step at N={s['big_n']}: {s['big_n_ratio']:.2f}x; "
        f"Inception pass alone {s['extraction_ratio']:.2f}x; FID equal to "
        f"{s['fid_relative_difference']:~e} relative (generated Inception weights)"
    )


def block(report: dict[str, Any]) -> str:
    s, data = report["summary"], report["data"]
    setup = (
        f"Setup: {s['n_generated']} generated vs {s['n_reference']} reference images, FID + KID + IS, "
        f"weights: {s['weights']}; report created {report['created']}."
    )
    non_defaults = s.get("torch_fidelity_non_defaults")
    if non_defaults:  # the peer protocol: every option torch-fidelity does not run at its default
        threads = s.get("torch_threads")
        setup += (
            " torch-fidelity runs at its defaults except "
            + ", ".join(f"`{name}`" for name in non_defaults if name != "extraction section")
            + " (each with its reason in the report, as are the extraction section's calls)"
            + (f"; both tools on {threads} torch thread(s)." if threads is not None else ".")
        )
    rows = [
        [
            r["round"],
            f"{r['diffkit_s']:.1f} s",
            f"{r['torch_fidelity_s']:.1f} s",
            f"{r['ratio_diffkit_over_tf']:.2f}",
            str(r["diffkit_extracted"]),
        ]
        for r in data["rows"]
    ]
    rounds = table(["round", "diffkit eval", "torch-fidelity", "ratio", "images diffkit extracted"], rows)
    mean = (
        f"Cold, mean of both orders: diffkit {s['cold_diffkit_s']:.1f} s, torch-fidelity "
        f"{s['cold_torch_fidelity_s']:.1f} s (ratio {s['cold_ratio']:.2f}); cached re-run: "
        f"{s['rerun_diffkit_s']:.1f} s vs {s['rerun_torch_fidelity_s']:.1f} s (ratio {s['rerun_ratio']:.2f})."
    )
    first = data["values"][data["rows"][0]["round"]]
    inception = [v["diffkit_timings_s"]["features_inception"] for v in data["values"].values()]
    values = (
        f"FID: diffkit {first['diffkit_fid']:.4f}, torch-fidelity {first['tf_fid']:.4f} (relative difference "
        f"{s['fid_relative_difference']:~e}); KID and IS identical. diffkit's Inception pass took "
        f"{max(inception[:2]):.0f} s cold and {min(inception):.3f} s from its feature cache."
    )
    return "\n\n".join([setup, rounds, mean, values])


def prose(report: dict[str, Any]) -> dict[str, str]:
    """The figure docs/benchmarks.md quotes in its prose: the sample count of the FID-step timing."""
    return {"big_n": f"{report['summary']['big_n']:,}"}
