"""Attack plugins: one file per attack, registered with `@register_attack`."""
