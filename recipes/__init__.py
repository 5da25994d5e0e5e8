"""Recipes: YAML configs under configs/ (data, not code), loaded and validated with OmegaConf against the
training and extractor dataclasses; the resolved config and provenance of a run; `reproduce`."""
