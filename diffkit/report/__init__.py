"""Reports: every command writes a self-contained HTML file and a JSON sidecar with the same numbers."""

from diffkit.report.index import IndexConfig, IndexResult, build_index
from diffkit.report.model import Report, ReportImage, ReportPaths, Section
from diffkit.report.plots import bar_chart, histogram, line_plot
from diffkit.report.render import format_value, write_report

__all__ = [
    "IndexConfig",
    "IndexResult",
    "Report",
    "ReportImage",
    "ReportPaths",
    "Section",
    "bar_chart",
    "build_index",
    "format_value",
    "histogram",
    "line_plot",
    "write_report",
]
