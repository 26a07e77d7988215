"""``diffkit scrape``: N unique, valid images from a "random image" URL, politely and resumably."""

from diffkit.lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "DEFAULT_USER_AGENT": "config",
        "TPDNE_ENDPOINTS": "config",
        "ScrapeConfig": "config",
        "ScrapeResult": "result",
        "scrape": "run",
    },
)
