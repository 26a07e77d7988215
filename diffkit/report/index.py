"""``diffkit report``: one index page over every report in a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffkit.atomic import atomic_write_text, check_writable_dir
from diffkit.console import CommandResult, printable, shown
from diffkit.errors import DiffkitError
from diffkit.report.render import render_index


@dataclass(frozen=True)
class IndexConfig:
    reports_dir: Path = Path("reports")


@dataclass
class IndexResult(CommandResult):
    index: Path
    n_reports: int

    def report_paths(self) -> list[Path]:
        return [self.index]

    def summary_lines(self) -> list[str]:
        return [f"{self.n_reports} reports listed in [bold]{shown(self.index)}[/]"]


def build_index(config: IndexConfig) -> IndexResult:
    if not config.reports_dir.is_dir():
        raise DiffkitError(f"no reports folder at {config.reports_dir}: run a diffkit command first")
    check_writable_dir(config.reports_dir, "the report index")
    index_path = config.reports_dir / "index.html"
    if index_path.is_symlink():  # never write through a link to somewhere else
        raise DiffkitError(f"{index_path} is a symlink; remove it and rerun")
    html, n_reports = render_index(config.reports_dir)
    atomic_write_text(index_path, printable(html), durable=False)
    return IndexResult(index=index_path, n_reports=n_reports)
