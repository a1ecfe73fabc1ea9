"""The plugin contract: registries, typed configs, and the bases a plugin extends."""
