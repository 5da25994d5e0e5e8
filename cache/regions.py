"""The 3×3 valence–arousal regions of soft prompt guidance, shared by the CLIP extractor (which stores the
region prototypes) and the loss (which builds soft labels): one definition, so their orders cannot drift."""

from __future__ import annotations

REGION_LEVELS = (-0.66, 0.0, 0.66)  # region centres along V and along A


def region_grid() -> list[tuple[int, int, float, float]]:
    """(i_valence, i_arousal, v, a) per region, valence-major: region index = 3·i_valence + i_arousal."""
    return [(iv, ia, v, a) for iv, v in enumerate(REGION_LEVELS) for ia, a in enumerate(REGION_LEVELS)]
