"""Registers the audio extractors (`ast`, `wavlm`) and `audio_reliability` (imported by `extract.base`)."""

from extract import ast, reliability, wavlm  # noqa: F401  (registration happens on import)
