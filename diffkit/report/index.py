"""``diffkit report``: one index page over every report in a folder, and one page per dataset + run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffkit.atomic import atomic_write_text, check_writable_dir
from diffkit.console import CommandResult, printable, shown
from diffkit.errors import DiffkitError
from diffkit.report.render import relative_href, render_template, report_metadata, visible
from diffkit.report.runpage import RUN_PAGE_COMMAND, RunPage, write_run_pages
from diffkit.report.sidecars import Sidecar, Skipped, folder_key, scan_sidecars

# The terminal names this many skipped files; --json and the index page list them all.
SKIPPED_SHOWN = 10


@dataclass(frozen=True)
class IndexConfig:
    reports_dir: Path = Path("reports")


@dataclass
class IndexResult(CommandResult):
    index: Path
    n_reports: int
    run_pages: list[Path] = field(default_factory=list)
    # each run page's run folder, as one comparable string (sidecars.folder_key), for page_for_run
    run_keys: dict[str, Path] = field(default_factory=dict, repr=False)
    # files that look like reports but could not be read (a pipe, too large, invalid JSON)
    skipped: list[Skipped] = field(default_factory=list)

    def page_for_run(self, run_dir: Path) -> Path | None:
        """The page of the run in ``run_dir`` (a path as the commands were given it), if one was written."""
        return self.run_keys.get(folder_key(str(run_dir), self.index.resolve().parent.parent))

    def report_paths(self) -> list[Path]:
        return [self.index, *self.run_pages]

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "index": str(self.index),
            "n_reports": self.n_reports,
            "run_pages": [str(p) for p in self.run_pages],
        }
        if self.skipped:  # only when there is something to say: the usual answer stays as it was
            out["skipped"] = [skipped.to_dict() for skipped in self.skipped]
        return out

    def summary_lines(self) -> list[str]:
        lines = [f"{self.n_reports} reports listed in [bold]{shown(self.index)}[/]"]
        lines += [f"run page: {shown(page)}" for page in self.run_pages]
        lines += [
            f"[yellow]skipped[/] {shown(visible(skipped.name))}: {shown(skipped.reason)}"
            for skipped in self.skipped[:SKIPPED_SHOWN]
        ]
        if len(self.skipped) > SKIPPED_SHOWN:
            lines.append(f"[yellow]skipped[/] {len(self.skipped) - SKIPPED_SHOWN} more (see the index page)")
        return lines


DATASET_STAGES = ("scrape", "dedupe")  # a dataset's own reports: listed once under it, not per run


def _entry(sidecar: Sidecar) -> dict[str, object]:
    return {
        "created": sidecar.created,
        "command": sidecar.command,
        "title": sidecar.title,
        "href": relative_href(sidecar.html_path.name),
        "headline_text": sidecar.headline,
        "headline": list(sidecar.summary.items())[:6],
    }


def _newest(entries: list[dict[str, object]]) -> str:
    return max((str(entry["created"]) for entry in entries), default="")


def _by_created(sidecars: list[Sidecar]) -> list[dict[str, object]]:
    return [_entry(s) for s in sorted(sidecars, key=lambda s: s.created, reverse=True)]


def group_entries(sidecars: list[Sidecar], run_pages: list[RunPage]) -> list[dict[str, Any]]:
    """The reports by dataset, then by run within it, each level newest first.

    A dataset's scrape and dedupe reports are listed once, under the dataset; a run's train, sample and
    eval reports under the run (an eval by its images' provenance, as on the run pages); reports that
    name neither go last, under "Other reports".
    """
    placed: set[Path] = set()
    dataset_reports: dict[str, list[Sidecar]] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    names: dict[str, str | None] = {}
    for page in run_pages:
        group = page.group
        key = group.dataset or ""
        names[key] = group.dataset
        mine = [s for command in group.commands() for s in group.reports[command]]
        shared = [s for s in mine if group.run is None or s.command in DATASET_STAGES]
        dataset_reports.setdefault(key, []).extend(s for s in shared if s.html_path not in placed)
        placed.update(s.html_path for s in shared)
        runs.setdefault(key, [])
        if group.run is not None:
            own = [s for s in mine if s.command not in DATASET_STAGES]
            placed.update(s.html_path for s in own)
            entries = _by_created(own)
            runs[key].append(
                {"run": group.run, "href": relative_href(page.html.name), "headline": page.headline,
                 "entries": entries, "newest": _newest(entries)}
            )  # fmt: skip
    groups = []
    for key, dataset in names.items():
        entries = _by_created(dataset_reports.get(key, []))
        in_runs = sorted(runs[key], key=lambda run: str(run["newest"]), reverse=True)
        newest = max([_newest(entries), *(str(run["newest"]) for run in in_runs)])
        listed = {"dataset": dataset, "other": False, "entries": entries, "runs": in_runs, "newest": newest}
        groups.append(listed)
    groups.sort(key=lambda group: str(group["newest"]), reverse=True)
    rest = [_entry(s) for s in sidecars if s.command != RUN_PAGE_COMMAND and s.html_path not in placed]
    if rest:
        groups.append({"dataset": None, "other": True, "entries": rest, "runs": [], "newest": _newest(rest)})
    return groups


def render_index(
    reports_dir: Path,
    sidecars: list[Sidecar],
    run_pages: list[RunPage] | None = None,
    skipped: list[Skipped] | None = None,
) -> tuple[str, int]:
    """HTML listing every run page and every report in ``reports_dir``, newest first; how many reports."""
    entries = [_entry(sidecar) for sidecar in sidecars if sidecar.command != RUN_PAGE_COMMAND]
    runs = [
        {
            "href": relative_href(page.html.name),
            "run": page.group.run,
            "dataset": page.group.dataset,
            "commands": page.group.commands(),
            "headline": page.headline,
        }
        for page in run_pages or []
    ]
    html = render_template(
        "index.html",
        title=f"diffkit reports in {printable(reports_dir)}",
        command="report",
        meta=report_metadata(),
        json_name="",
        json_href="",
        entries=entries,
        groups=group_entries(sidecars, run_pages or []),
        runs=runs,
        skipped=[{"name": printable(s.name), "reason": s.reason} for s in skipped or []],
    )
    return html, len(entries)


def build_index(config: IndexConfig) -> IndexResult:
    if not config.reports_dir.is_dir():
        raise DiffkitError(f"no reports folder at {config.reports_dir}: run a diffkit command first")
    check_writable_dir(config.reports_dir, "the report index")
    index_path = config.reports_dir / "index.html"
    if index_path.is_symlink():  # never write through a link to somewhere else
        raise DiffkitError(f"{index_path} is a symlink; remove it and rerun")
    scan = scan_sidecars(config.reports_dir)  # read once: the run pages and the index see one folder
    pages = write_run_pages(config.reports_dir, scan.sidecars)
    html, n_reports = render_index(config.reports_dir, scan.sidecars, pages, scan.skipped)
    atomic_write_text(index_path, printable(html), durable=False)
    base = config.reports_dir.resolve().parent
    run_keys = {folder_key(page.group.run, base): page.html for page in pages if page.group.run}
    return IndexResult(index_path, n_reports, [page.html for page in pages], run_keys, scan.skipped)
