import numpy as np
import pytest

from cache.align import align_to_frames
from cache.media import frame_times


def col(x):
    return np.asarray(x, dtype=np.float32)[:, None]


def test_same_rate_is_identity():
    v = col(np.arange(30))
    out, mask = align_to_frames(v, frame_times(30, 30), frame_times(30, 30))
    np.testing.assert_allclose(out, v, atol=1e-5)
    assert mask.all()


def test_frame_rate_conversion_25_to_30_hand_computed():
    # 25 fps rows 0..4 cover [0, .04), [.04, .08), ...; 30 fps frame 1 is [1/30, 2/30)
    v = col([0, 10, 20, 30, 40])
    out, mask = align_to_frames(v, frame_times(5, 25), frame_times(4, 30))
    w0, w1 = 0.04 - 1 / 30, 2 / 30 - 0.04  # overlap with row 0 and row 1
    assert out[0, 0] == pytest.approx(0.0)
    assert out[1, 0] == pytest.approx((0 * w0 + 10 * w1) / (w0 + w1), rel=1e-5)
    assert mask.tolist() == [True] * 4


def test_50hz_audio_frames_onto_30fps():
    # 20 ms rows with value = row index; frame 0 [0, 1/30) overlaps row 0 fully and row 1 for 1/30 - 0.02
    n = 100
    t = np.arange(n) * 0.02
    out, mask = align_to_frames(col(np.arange(n)), np.stack([t, t + 0.02], 1), frame_times(60, 30))
    expected0 = (0 * 0.02 + 1 * (1 / 30 - 0.02)) / (1 / 30)
    assert out[0, 0] == pytest.approx(expected0, rel=1e-5)
    assert out[3, 0] == pytest.approx((5 * (0.12 - 0.1) + 6 * (0.1 + 1 / 30 - 0.12)) / (1 / 30), rel=1e-5)
    assert mask[:60].all()


def test_overlapping_windows_average_and_gaps_masked():
    # 1 s windows, hop 0.5 s: [0,1), [0.5,1.5), [1,2); values 0, 1, 2; then a gap and a window [3,4)
    times = np.array([[0, 1], [0.5, 1.5], [1, 2], [3, 4]], dtype=float)
    v = col([0, 1, 2, 9])
    targets = np.array([[0.0, 0.5], [0.5, 1.0], [0.75, 1.25], [2.2, 2.4], [3.5, 3.6]])
    out, mask = align_to_frames(v, times, targets)
    assert out[0, 0] == pytest.approx(0.0)
    assert out[1, 0] == pytest.approx(0.5)  # windows 0 and 1 equally
    assert out[2, 0] == pytest.approx((0 * 0.25 + 1 * 0.5 + 2 * 0.25) / 1.0)
    assert mask.tolist() == [True, True, True, False, True]
    assert out[3, 0] == 0.0 and out[4, 0] == pytest.approx(9.0)


def test_segments_expand_to_frames_with_overlap_averaging():
    # 4 s segments with 2 s hop at 10 fps: frames in [2, 4) are covered by segments 0 and 1
    times = np.array([[0, 4], [2, 6], [4, 8]], dtype=float)
    v = np.array([[1.0, -1.0], [3.0, 1.0], [5.0, 0.0]], dtype=np.float32)
    out, mask = align_to_frames(v, times, frame_times(80, 10))
    np.testing.assert_allclose(out[5], [1, -1])
    np.testing.assert_allclose(out[25], [2, 0])
    np.testing.assert_allclose(out[45], [4, 0.5])
    np.testing.assert_allclose(out[70], [5, 0])
    assert mask.all()


def test_invalid_rows_ignored_and_nearest_fill():
    v = col([1, 2, 3, 4, 5, 6])
    valid = np.array([True, False, False, False, False, True])
    out, mask = align_to_frames(v, frame_times(6, 10), frame_times(6, 10), valid=valid)
    assert mask.tolist() == [True, False, False, False, False, True]
    out, mask = align_to_frames(v, frame_times(6, 10), frame_times(6, 10), valid=valid, nearest_fill=0.15)
    # frame 1 touches row 0, frame 4 touches row 5; frame 2 is 0.1 s from row 0, frame 3 0.1 s from row 5
    assert mask.tolist() == [True] * 6
    assert out[:, 0].tolist() == [1, 1, 1, 6, 6, 6]
    out, mask = align_to_frames(v, frame_times(6, 10), frame_times(6, 10), valid=valid, nearest_fill=0.05)
    assert mask.tolist() == [True, True, False, False, True, True]
    assert out[1, 0] == 1 and out[4, 0] == 6


def test_multidim_and_unsorted_rows():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(20, 3, 2)).astype(np.float32)
    t = frame_times(20, 20)
    perm = rng.permutation(20)
    out, mask = align_to_frames(v[perm], t[perm], t)
    np.testing.assert_allclose(out, v, atol=1e-6)
    assert out.shape == (20, 3, 2)
