"""Exact and perceptual de-duplication of image folders (``diffkit dedupe``)."""
