"""Executors: one file per engine that starts a run's workers (`bench.plugins.executor`)."""
