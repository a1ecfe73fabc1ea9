"""Weights on disk: the verified cache, downloads by URL, foreign layouts."""
