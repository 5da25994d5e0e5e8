"""The common shape of model-backed audio extractors (ast, wavlm): load one model bundle, skip videos
without an audio stream (no group, one logged line), and turn the decoded audio into one group per video."""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any

import numpy as np

from extract.audio import Audio, as_audio, audio_units
from extract.base import AudioExtractor, UnitResult, VideoContext

log = logging.getLogger(__name__)


class ModelAudioExtractor(AudioExtractor):
    """Subclasses give `load_bundle(ref, device)` and `compute(audio) -> (values, times, valid, attrs)`."""

    bundle: Any = None

    @abstractmethod
    def load_bundle(self, ref: str, device: str) -> Any:
        """The model (and its processor) for a reference, on `device`."""

    @abstractmethod
    def compute(self, audio: Audio) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Values, times, valid and extra group attributes from the decoded audio."""

    def load(self, device: str = "cpu") -> None:
        super().load(device)
        self.bundle = self.load_bundle(self.model_ref, device)

    def units_for(self, video: VideoContext) -> list[str]:
        return audio_units(video, self.name, self.__dict__.setdefault("_no_audio_logged", set()))

    def process_audio(self, video: VideoContext, audio: Any) -> dict[str, UnitResult]:
        if audio is None:
            log.info("%s: no audio, no %s group", video.stem, self.name)
            return {}
        sound = as_audio(audio, self.sample_rate)
        values, times, valid, attrs = self.compute(sound)
        attrs = {"audio_start": sound.start, "audio_seconds": sound.duration, "audio_backend": sound.backend, **attrs}
        return {video.stem: UnitResult(values, times, valid, attrs)}

    def close(self) -> None:
        self.bundle = None
