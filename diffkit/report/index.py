"""``diffkit report``: one index page over every report in a folder, and one page per dataset + run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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


def render_index(
    reports_dir: Path,
    sidecars: list[Sidecar],
    run_pages: list[RunPage] | None = None,
    skipped: list[Skipped] | None = None,
) -> tuple[str, int]:
    """HTML listing every run page and every report in ``reports_dir``, newest first; how many reports."""
    entries = [
        {
            "created": sidecar.created,
            "command": sidecar.command,
            "title": sidecar.title,
            "href": relative_href(sidecar.html_path.name),
            "headline_text": sidecar.headline,
            "headline": list(sidecar.summary.items())[:6],
        }
        for sidecar in sidecars
        if sidecar.command != RUN_PAGE_COMMAND
    ]
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
