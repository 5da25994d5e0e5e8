"""Audio decoding: each video's sound once, as 16 kHz mono float32 with its start time.

decord's `AudioReader` decodes and resamples in one call; it fails on some tracks (AC3: "Fail to
send packet"), so PyAV is the fallback, decoding packet by packet and skipping the packets that
fail. Timing comes from the stream's timestamps, never from the sample count alone: AAC adds
encoder padding (2.0 s of audio comes back as 33,792 samples), so the decoded samples are cut to
the stream's duration when the container states one. A video without an audio stream gives `None`
and a logged line, not an error. Both tracks of a two-person video share the one decode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class AudioDecodeError(RuntimeError):
    """The audio stream exists but neither backend could decode it; the message names the file."""


@dataclass(frozen=True)
class Audio:
    """Mono waveform on the video's timeline: sample k covers start + k / sample_rate seconds."""

    samples: np.ndarray  # (S,) float32 in [-1, 1]
    sample_rate: int
    start: float = 0.0  # seconds of samples[0] on the video's timeline
    backend: str = ""

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def end(self) -> float:
        return self.start + self.duration

    def segment(self, t0: float, t1: float) -> np.ndarray:
        """Samples of [t0, t1) seconds on the video timeline, zero-padded where the audio has none."""
        n = int(round((t1 - t0) * self.sample_rate))
        first = int(round((t0 - self.start) * self.sample_rate))
        out = np.zeros(n, dtype=np.float32)
        lo, hi = max(first, 0), min(first + n, len(self.samples))
        if hi > lo:
            out[lo - first : hi - first] = self.samples[lo:hi]
        return out


@dataclass(frozen=True)
class _StreamTiming:
    start: float
    duration: float | None
    codec: str


def _stream_timing(path: Path) -> _StreamTiming | None:
    """Start and duration (seconds) of the first audio stream from the container; None if no audio."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        tb = stream.time_base
        start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
        duration = float(stream.duration * tb) if stream.duration is not None and tb else None
        return _StreamTiming(start=start, duration=duration, codec=stream.codec_context.name)


def _decode_decord(path: Path, sample_rate: int) -> np.ndarray:
    import decord

    reader = decord.AudioReader(str(path), ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)
    # (channels, S), already mono and resampled. The reader keeps the decoded array; its public indexing
    # copies sample by sample, so read the array when this decord version has it.
    samples = getattr(reader, "_array", None)
    if samples is None:
        samples = reader[:].asnumpy()
    return np.asarray(samples, dtype=np.float32).reshape(-1)


def _decode_pyav(path: Path, sample_rate: int) -> tuple[np.ndarray, float | None]:
    """Packet by packet; a packet that fails to decode is skipped (and counted), the rest is kept.
    Returns the resampled mono samples and the first decoded frame's time (seconds) if known."""
    import av
    import librosa

    chunks: list[np.ndarray] = []
    first_time: float | None = None
    native_rate: int | None = None
    failed = 0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except (av.error.FFmpegError, ValueError) as err:  # one bad packet must not lose the track
                failed += 1
                if failed == 1:
                    log.debug("%s: audio packet failed to decode (%s)", path, err)
                continue
            for frame in frames:
                data = frame.to_ndarray()
                if data.dtype.kind in "iu":
                    data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
                data = data.astype(np.float32)
                if frame.format.is_planar:
                    mono = data.mean(axis=0)
                else:  # packed: (1, S * channels)
                    channels = len(frame.layout.channels)
                    mono = data.reshape(-1, channels).mean(axis=1)
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                native_rate = native_rate or frame.sample_rate
                chunks.append(mono)
    if failed:
        log.warning("%s: %d audio packet(s) could not be decoded and were skipped", path, failed)
    if not chunks or native_rate is None:
        raise AudioDecodeError(f"{path}: PyAV decoded no audio samples")
    samples = np.concatenate(chunks)
    if native_rate != sample_rate:
        samples = librosa.resample(samples, orig_sr=native_rate, target_sr=sample_rate)
    return samples.astype(np.float32), first_time


def decode_audio(path: Path, sample_rate: int = SAMPLE_RATE, backend: str = "auto") -> Audio | None:
    """The video's audio as mono float32 at `sample_rate`, or None (logged) when it has no audio stream.

    backend: 'auto' (decord, then PyAV on failure), 'decord' or 'pyav'.
    """
    path = Path(path)
    timing = _stream_timing(path)
    if timing is None:
        log.info("%s: no audio stream; audio features skip this video", path)
        return None
    start = timing.start
    samples: np.ndarray | None = None
    used = ""
    if backend in ("auto", "decord"):
        try:
            samples, used = _decode_decord(path, sample_rate), "decord"
        except Exception as err:  # decord raises DECORDError / RuntimeError with little structure
            if backend == "decord":
                raise AudioDecodeError(f"{path}: decord failed ({type(err).__name__}: {err})") from None
            log.warning(
                "%s: decord could not decode the %s audio (%s); falling back to PyAV",
                path, timing.codec, str(err).splitlines()[0][:120] if str(err) else type(err).__name__,
            )
    if samples is None:
        try:
            samples, first_time = _decode_pyav(path, sample_rate)
        except AudioDecodeError:
            raise
        except Exception as err:
            raise AudioDecodeError(f"{path}: cannot decode audio ({type(err).__name__}: {err})") from None
        used = "pyav"
        if first_time is not None:
            start = first_time
    samples = np.clip(np.nan_to_num(samples), -1.0, 1.0).astype(np.float32, copy=False)
    if timing.duration is not None:
        # Encoder padding lies past the stream's stated duration: cut it.
        limit = int(round(timing.duration * sample_rate))
        if len(samples) > limit:
            samples = samples[:limit]
    if len(samples) == 0:
        raise AudioDecodeError(f"{path}: the audio stream decoded to zero samples")
    log.debug("%s: %.2f s of audio from %.3f s via %s", path, len(samples) / sample_rate, start, used)
    return Audio(samples=np.ascontiguousarray(samples), sample_rate=sample_rate, start=start, backend=used)


def as_audio(audio: "Audio | np.ndarray", sample_rate: int = SAMPLE_RATE) -> Audio:
    """An `Audio` from what a runner hands over: an `Audio` as is, or a bare array (start time taken
    from its `start` attribute if it has one, else 0)."""
    if isinstance(audio, Audio):
        return audio
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    return Audio(samples=samples, sample_rate=sample_rate, start=float(getattr(audio, "start", 0.0)))


def audio_units(video, feature: str, logged: set[str]) -> list[str]:
    """The units (the video stem) an audio feature writes for a video: none when the container has no
    audio stream, so the runner neither fails nor redoes the video; logged once per video."""
    if not video.info.has_audio:
        if video.stem not in logged:
            logged.add(video.stem)
            log.info("%s: no audio stream, so no %s group", video.stem, feature)
        return []
    return [video.stem]
