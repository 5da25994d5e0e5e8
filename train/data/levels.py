"""The levels windows run over, registered by name like the heads: `frame` (label frames,
train/data/dataset.py), `segment` (the first feature's segments, train/data/segments.py), `audio_window`
(an audio store's rows, train/data/window_audio.py). A level is a `TrackDataset` class with a `level`
name and a `build` classmethod taking `build_dataset`'s options (train/data/build.py)."""

from __future__ import annotations

LEVELS: dict[str, type] = {}


def register_level(cls: type) -> type:
    """Class decorator: `cls.level` names the level."""
    name = cls.level
    if name in LEVELS and LEVELS[name] is not cls:
        raise ValueError(f"level {name!r} is already registered to {LEVELS[name].__name__}")
    LEVELS[name] = cls
    return cls
