"""Reports: every command writes a self-contained HTML file and a JSON sidecar with the same numbers."""

from diffkit.lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "IndexConfig": "index",
        "IndexResult": "index",
        "build_index": "index",
        "Report": "model",
        "ReportImage": "model",
        "ReportPaths": "model",
        "Section": "model",
        "bar_chart": "plots",
        "histogram": "plots",
        "line_plot": "plots",
        "format_value": "render",
        "write_report": "render",
    },
)
