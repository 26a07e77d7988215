"""diffkit: scrape, de-duplicate, train, sample and evaluate image diffusion models."""

__version__ = "0.1.0"
