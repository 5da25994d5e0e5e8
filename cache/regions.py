"""The 3×3 valence–arousal regions of soft prompt guidance, shared by the CLIP extractor (which stores the
region prototypes) and the loss (which builds soft labels): one definition, so their orders cannot drift."""

from __future__ import annotations

REGION_LEVELS = (-0.66, 0.0, 0.66)  # region centres along V and along A


def region_grid() -> list[tuple[int, int, float, float]]:
    """(i_valence, i_arousal, v, a) per region, valence-major: region index = 3·i_valence + i_arousal."""
    return [(iv, ia, v, a) for iv, v in enumerate(REGION_LEVELS) for ia, a in enumerate(REGION_LEVELS)]


# (valence index, arousal index) -> the state words of that region
REGION_STATES = {
    (0, 0): "sad and depressed",
    (0, 1): "unhappy and displeased",
    (0, 2): "angry and distressed",
    (1, 0): "calm and sleepy",
    (1, 1): "neutral",
    (1, 2): "surprised and alert",
    (2, 0): "relaxed and content",
    (2, 1): "pleased and happy",
    (2, 2): "excited and delighted",
}
PROMPT_TEMPLATES = (
    "a photo of a {} face.",
    "a face that looks {}.",
    "a close-up photo of a person who is {}.",
)


def region_prompts() -> tuple[list[list[str]], list[list[float]]]:
    """Prompts per region (9 x 3) and region centres [[v, a], ...], valence-major order."""
    prompts, centres = [], []
    for iv, ia, v, a in region_grid():
        prompts.append([t.format(REGION_STATES[(iv, ia)]) for t in PROMPT_TEMPLATES])
        centres.append([v, a])
    return prompts, centres
