"""``diffkit scrape``: N unique, valid images from a "random image" URL, politely and resumably."""

from diffkit.scrape.config import DEFAULT_USER_AGENT, TPDNE_ENDPOINTS, ScrapeConfig
from diffkit.scrape.result import ScrapeResult
from diffkit.scrape.run import scrape

__all__ = ["DEFAULT_USER_AGENT", "TPDNE_ENDPOINTS", "ScrapeConfig", "ScrapeResult", "scrape"]
