"""The row shape a store promises: a store whose `input_spec` extra records an `image_size` S (face_crops)
holds (S, S, 3) uint8 rows in every group. A group of another shape (crafted, or written by another
extractor version) is damage that `verify` reports and that fine-tuning refuses in one line, instead of a
traceback deep inside the backbone."""

from __future__ import annotations

from typing import Any

from cache.store import FeatureStore

INPUT_SPEC_EXTRA = "input_spec"


def expected_row_shape(store: FeatureStore) -> tuple[int, ...] | None:
    """(S, S, 3) for a store with an input_spec that records image_size S; None for any other store."""
    if INPUT_SPEC_EXTRA not in store.extra_names():
        return None
    _, spec = store.get_extra(INPUT_SPEC_EXTRA)
    return crop_shape(spec)


def crop_shape(spec: dict[str, Any]) -> tuple[int, ...] | None:
    size = spec.get("image_size")
    return (int(size), int(size), 3) if size is not None else None


def row_shape_problem(shape: tuple[int, ...], expected: tuple[int, ...] | None) -> str | None:
    """One line when a group's row shape is not the store's; None when it is (or nothing is promised)."""
    if expected is None or tuple(shape) == tuple(expected):
        return None
    return f"rows of shape {tuple(shape)}, but the store's input_spec makes them {tuple(expected)}"
