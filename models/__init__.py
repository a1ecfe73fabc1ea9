"""Model plugins: one file per architecture family, registered with `@register_model`."""
