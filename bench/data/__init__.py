"""Datasets: reading and verifying a data root, fetching, the dataset plugins."""
