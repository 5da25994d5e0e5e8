"""The row shape a store promises: a store whose `input_spec` extra records an `image_size` S (face_crops)
holds rows of its codec's shape for S px crops in every group ((S, S, 3) pixels, or the fixed-width JPEG
rows of `cache/crop_codec.py`). A group of another shape (crafted, or written by another extractor
version) is refused when written, reported by `verify`, and refused in one line by fine-tuning, instead of
a traceback deep inside the backbone."""

from __future__ import annotations

from typing import Any

from cache.crop_codec import codec_of
from cache.crops import INPUT_SPEC_EXTRA
from cache.store import FeatureStore


def expected_row_shape(store: FeatureStore) -> tuple[int, ...] | None:
    """The stored row shape of a store with an input_spec that records image_size; None for any other."""
    try:
        _, spec = store.get_extra(INPUT_SPEC_EXTRA)
    except KeyError:  # no input_spec (as `cache.crops.crop_size`): no listing of the extras needed
        return None
    return crop_shape(spec, store.meta.config)


def crop_shape(spec: dict[str, Any], config: dict[str, Any]) -> tuple[int, ...] | None:
    """The row shape for the crops an input_spec records, stored with the codec of the store's `config`."""
    size = spec.get("image_size")
    return codec_of(config).row_shape(int(size)) if size is not None else None


def row_shape_problem(shape: tuple[int, ...], expected: tuple[int, ...] | None) -> str | None:
    """One line when a group's row shape is not the store's; None when it is (or nothing is promised)."""
    if expected is None or tuple(shape) == tuple(expected):
        return None
    return f"rows of shape {tuple(shape)}, but the store's input_spec makes them {tuple(expected)}"
