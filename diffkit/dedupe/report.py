"""The HTML report of a dedupe run: are the thresholds right? Both stages: the hash's nearest-neighbour
histogram and near misses (stage 1), the thumbnail similarity of every candidate pair and the borderline
pairs on either side of ``--min-similarity`` (stage 2); then the clusters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from diffkit.console import printable
from diffkit.dataset.decode import open_rgb
from diffkit.dedupe.stages import SIMILARITY_BINS
from diffkit.report.model import Report, ReportImage, ReportPaths, Section
from diffkit.report.plots import histogram
from diffkit.report.render import write_report

if TYPE_CHECKING:
    from diffkit.dedupe.result import DedupeResult

_THUMB = 128
_MAX_CLUSTER_SHEETS = 40
_MAX_MEMBERS_SHOWN = 8
_MAX_NEAR_MISS_SHEETS = 24
_KEEP_COLOUR = (46, 160, 67)
_DUP_COLOUR = (214, 75, 75)
_FATE = {
    "report": "duplicate (nothing was changed)",
    "move": "duplicate, moved to the quarantine folder",
    "delete": "duplicate, deleted (grey tiles)",
}


def _thumbnail(path: Path) -> Image.Image:
    try:
        thumb = open_rgb(path, draft_side=_THUMB)  # the one decoder: a 16-bit PNG is not a white tile
        thumb.thumbnail((_THUMB, _THUMB))
        return thumb
    except Exception:  # moved, deleted or unreadable since the scan: show a grey tile
        return Image.new("RGB", (_THUMB, _THUMB), (200, 200, 200))


def contact_sheet(paths: list[Path], borders: list[tuple[int, int, int]]) -> Image.Image:
    """Thumbnails in a row, each framed in its colour (green keeper, red duplicate)."""
    pad = 4
    sheet = Image.new("RGB", (len(paths) * (_THUMB + 2 * pad), _THUMB + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (path, colour) in enumerate(zip(paths, borders, strict=True)):
        x = k * (_THUMB + 2 * pad)
        draw.rectangle([x, 0, x + _THUMB + 2 * pad - 1, _THUMB + 2 * pad - 1], fill=colour)
        thumb = _thumbnail(path)
        sheet.paste(thumb, (x + pad + (_THUMB - thumb.width) // 2, pad + (_THUMB - thumb.height) // 2))
    return sheet


def _similarity_figure(result: DedupeResult) -> Figure:
    figure = Figure(figsize=(6.4, 3.4))
    axes = figure.add_subplot()
    edges = SIMILARITY_BINS
    axes.bar(edges[:-1], result.similarity_histogram, width=0.01, align="edge", color="#4b6fd6")
    axes.axvline(
        result.min_similarity,
        color="#d64b4b",
        linestyle="--",
        label=f"--min-similarity {result.min_similarity}",
    )
    axes.set_yscale("symlog")
    axes.set_xlabel("thumbnail similarity of each candidate pair (below 0.5: first bar)")
    axes.set_ylabel("pairs")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _verdict(pair: dict[str, Any]) -> str:
    """How a borderline pair was judged: a byte-identical pair is a duplicate whatever its thumbnails."""
    if pair.get("exact"):
        return "duplicate (byte-identical)"
    return "duplicate" if pair["accepted"] else "distinct"


def _verifier_section(
    result: DedupeResult, locate: Callable[[str], Path], locate_b: Callable[[str], Path] | None = None
) -> Section:
    """Stage 2: where the candidates' similarities fall, and the closest calls on both sides. A pair's
    second image is found by ``locate_b`` (``--against``: in the reference folder), else by ``locate``."""
    locate_b = locate_b or locate
    sheets = [
        ReportImage(
            contact_sheet(
                [locate(b["a"]), locate_b(b["b"])], [_DUP_COLOUR if b["accepted"] else _KEEP_COLOUR] * 2
            ),
            f"{_verdict(b)}: similarity {b['similarity']},"
            f" {b['distance']} bits: {printable(b['a'])} | {printable(b['b'])}",
        )
        for b in result.borderline[:_MAX_NEAR_MISS_SHEETS]
    ]
    return Section(
        heading="Thumbnail check of the candidate pairs (stage 2)",
        text=(
            f"{result.n_candidates} pairs came within {result.threshold} bits; {result.n_rejected} of them"
            " were turned down because their 16x16 colour thumbnails correlate less than"
            f" {result.min_similarity}."
            " Near copies sit at the right edge, similar distinct faces to the left. Below: the most similar"
            " pairs turned down (green, kept apart) and the least similar accepted (red). If a green pair is"
            " the same picture, lower --min-similarity; if a red pair holds two different pictures, raise it."
        ),
        figure=_similarity_figure(result) if result.n_candidates else None,
        images=sheets,
        table=[
            {k: printable(v) if isinstance(v, str) else v for k, v in b.items()} for b in result.borderline
        ]
        or None,
    )


def _nearest_section(result: DedupeResult) -> Section:
    """Stage 1: every image's distance to its nearest neighbour, with the threshold marked."""
    threshold = result.threshold
    nearest = [d for d, count in enumerate(result.nearest_histogram) for _ in range(count)]
    figure = None
    if nearest:
        hi = max([threshold + 8, *nearest])
        figure = histogram(
            nearest,
            bins=[b - 0.5 for b in range(0, hi + 2)],
            xlabel=f"{result.hash_kind} distance to nearest neighbour (bits)",
            marker=threshold + 0.5,
            marker_label=f"threshold {threshold}",
        )
        figure.tight_layout()  # keep the axis label inside the picture
    return Section(
        heading="Nearest-neighbour distances",
        text=(
            "For every image, the Hamming distance to its most similar other image. Duplicates sit at"
            " the left; distinct images form the bulk on the right. A threshold is safe when it lies in"
            " the gap between the two; the closest pairs just above it are shown below."
        ),
        figure=figure,
        table=[
            {"distance": d, "images": result.nearest_histogram[d]}
            for d in range(0, min(64, threshold + 6) + 1)
        ],
    )


def _clusters_section(result: DedupeResult, locate: Callable[[str], Path]) -> Section:
    """The clusters, largest first: a contact sheet each, the keeper framed green."""
    order = sorted(range(result.n_clusters), key=lambda c: (-len(result.clusters[c]), result.clusters[c][0]))
    sheets = []
    for c in order[:_MAX_CLUSTER_SHEETS]:
        members = result.clusters[c][:_MAX_MEMBERS_SHOWN]
        dists = result.cluster_distances[c][:_MAX_MEMBERS_SHOWN]
        colours = [_KEEP_COLOUR] + [_DUP_COLOUR] * (len(members) - 1)
        image = contact_sheet([locate(m) for m in members], colours)
        more = len(result.clusters[c]) - len(members)
        caption = (
            f"keep {printable(members[0])}; "
            + ", ".join(f"{printable(m)} ({d} bits)" for m, d in zip(members[1:], dists[1:], strict=True))
            + (f" and {more} more" if more else "")
        )
        sheets.append(ReportImage(image, caption))
    return Section(
        heading="Duplicate clusters",
        text=(
            f"{result.n_clusters} clusters, largest first (showing {len(sheets)}). Green: kept; red:"
            f" {_FATE[result.action]}. Distances are to the kept image."
        ),
        images=sheets,
    )


def _near_misses_section(
    result: DedupeResult, locate: Callable[[str], Path], data: dict[str, Any]
) -> Section:
    """Stage 1's closest calls: the pairs just above the threshold, not treated as duplicates."""
    misses = [
        ReportImage(
            contact_sheet([locate(m["a"]), locate(m["b"])], [_KEEP_COLOUR, _KEEP_COLOUR]),
            f"{m['distance']} bits: {printable(m['a'])} | {printable(m['b'])}",
        )
        for m in result.near_misses[:_MAX_NEAR_MISS_SHEETS]
    ]
    return Section(
        heading=f"Closest pairs above the threshold ({result.threshold} bits, stage 1)",
        text=(
            "Not treated as duplicates. If some of these are the same picture, raise --threshold; if the"
            " clusters above hold different pictures, lower it."
            if result.near_misses
            else "No pair lies within 4 bits above the threshold: a clear gap."
        ),
        images=misses,
        table=data["near_misses"] or None,
    )


def _listing_sections(result: DedupeResult, data: dict[str, Any]) -> list[Section]:
    """What was skipped or left alone, and the warnings: present only when there is something to say."""
    sections = []
    if result.unreadable:
        sections.append(Section(heading="Unreadable files (skipped)", table=data["unreadable"]))
    if result.symlinks_skipped:
        sections.append(
            Section(
                heading="Symlinks (skipped)",
                text=(
                    "Not images of this folder: never kept, moved or deleted; linked folders are not"
                    " searched."
                ),
                table=[{"path": path} for path in data["symlinks_skipped"]],
            )
        )
    if result.left_alone:
        sections.append(Section(heading="Duplicates left alone", table=data["left_alone"]))
    if result.warnings:
        sections.append(Section(heading="Warnings", text="\n".join(data["warnings"])))
    return sections


def _leaks_section(
    result: DedupeResult, locate: Callable[[str], Path], reference: Path, data: dict[str, Any]
) -> Section:
    """``--against``: each image of the folder that duplicates a reference image, beside that image."""
    sheets = [
        ReportImage(
            contact_sheet([locate(x["path"]), reference / x["reference"]], [_DUP_COLOUR, _KEEP_COLOUR]),
            f"{printable(x['path'])} = {printable(x['reference'])}: {x['distance']} bits, similarity"
            f" {x['similarity']}",
        )
        for x in result.leaks[:_MAX_CLUSTER_SHEETS]
    ]
    return Section(
        heading="Images that duplicate a reference image",
        text=(
            f"{len(result.leaks)} image(s) of {printable(result.directory)} (red) duplicate an image of"
            f" {printable(reference)} (green). A training set and an FID reference set that share pictures"
            " flatter the FID: remove them from one of the two. Nothing was changed in either folder."
        ),
        images=sheets,
        table=data["leaks"] or None,
    )


def _summary(result: DedupeResult) -> dict[str, Any]:
    if result.against is not None:
        return {
            "images": result.n_images,
            "against": printable(result.against),
            "leaks": len(result.leaks),
            "byte_identical": result.n_exact_duplicates,
            "hash": result.hash_kind,
            "threshold": result.threshold,
            "min_similarity": result.min_similarity,
            "candidate_pairs": result.n_candidates,
            "rejected_by_thumbnail_check": result.n_rejected,
            "hashed_this_run": result.n_hashed,
            "seconds": round(result.seconds.get("total", 0.0), 2),
        }
    return {
        "images": result.n_images,
        "unreadable": len(result.unreadable),
        "hash": result.hash_kind,
        "decode": result.decode,
        "threshold": result.threshold,
        "min_similarity": result.min_similarity,
        "candidate_pairs": result.n_candidates,
        "rejected_by_thumbnail_check": result.n_rejected,
        "clusters": result.n_clusters,
        "duplicates": result.n_duplicates,
        "duplicate_rate": result.n_duplicates / result.n_images if result.n_images else 0.0,
        "byte_identical": result.n_exact_duplicates,
        "action": result.action,
        "removed": result.n_removed,
        "hashed_this_run": result.n_hashed,
        "from_cache": result.n_cached,
        "recorded_by_scrape": result.n_from_scrape,
        "seconds": round(result.seconds.get("total", 0.0), 2),
    }


def build_report(result: DedupeResult, root: Path) -> Report:
    """One section per question: is the hash threshold right (stage 1), is the thumbnail check right
    (stage 2), what was found, what was skipped."""

    def locate(rel: str) -> Path:  # a moved duplicate is shown from the quarantine
        here = root / rel
        if not here.exists() and result.quarantine:
            return Path(result.quarantine) / rel
        return here

    data = result.to_dict()  # names with undecodable bytes shown as \xNN: the files are UTF-8
    title = f"Dedupe {printable(result.directory)}"
    if result.against is not None:  # a leak check: no clusters, no stage-1 histogram of the folder
        reference = Path(result.against)
        sections = [_leaks_section(result, locate, reference, data)]
        if result.min_similarity is not None:
            sections.append(_verifier_section(result, locate, lambda rel: reference / rel))
        title += f" against {printable(reference)}"
    else:
        sections = [_nearest_section(result)]
        if result.min_similarity is not None:
            sections.append(_verifier_section(result, locate))
        sections.append(_clusters_section(result, locate))
        sections.append(_near_misses_section(result, locate, data))
    sections.extend(_listing_sections(result, data))
    return Report(
        title=title,
        command="dedupe",
        summary=_summary(result),
        sections=sections,
        data=data,
    )


def write_dedupe_report(result: DedupeResult, root: Path, path: Path | None) -> ReportPaths:
    return write_report(build_report(result, root), path)
