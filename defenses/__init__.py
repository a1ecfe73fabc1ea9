"""Defense plugins: one file per training method, registered with `@register_defense`."""
