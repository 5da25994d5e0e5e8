"""RAS's audio-window rule (cache/audio_windows.py) on hand-made tracks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cache.audio_windows import AudioWindowRule, audio_windows, smooth_open

FPS = 10.0


def test_rule_values_are_ras_code_values():
    # src_audio_and_fusion/scripts/make_s2s_windows.yaml, make_audio_windows.yaml, configs/mm_cfg_va_s2s.yaml,
    # src/audio/data/abaw_va_dataset.py
    assert dataclasses.asdict(AudioWindowRule()) == {
        "window_s": 4.0, "hop_s": 2.0, "min_window_s": 1.0, "blocks": 4, "fill_closed_s": 0.15,
        "drop_open_s": 0.20, "min_open_s": 1.0, "min_coverage": 0.8, "min_valid_blocks": 2}


def test_grid_ends_with_a_partial_window():
    w = audio_windows(90, FPS)  # 9 s
    assert w.times.tolist() == [[0, 4], [2, 6], [4, 8], [6, 9]]
    assert w.frames.tolist() == [[0, 40], [20, 60], [40, 80], [60, 90]]
    assert audio_windows(100, FPS).times.tolist() == [[0, 4], [2, 6], [4, 8], [6, 10]]  # exact end: no extra
    assert audio_windows(25, FPS).times.tolist() == [[0, 2.5]]  # shorter than a window: one partial


def test_coverage_is_detected_frames_and_needs_0_8():
    flag = np.ones(40, bool)
    for n_seen, reliable in ((32, True), (31, False)):
        seen = np.zeros(40, bool)
        seen[:n_seen] = True
        w = audio_windows(40, FPS, open_flag=flag, detected=seen)
        assert w.coverage[0] == pytest.approx(n_seen / 40)
        assert bool(w.reliable[0]) is reliable


def test_open_needs_one_second_after_smoothing():
    seen = np.ones(40, bool)
    for n_open, reliable in ((10, True), (9, False)):
        flag = np.zeros(40, bool)
        flag[5 : 5 + n_open] = True
        w = audio_windows(40, FPS, open_flag=flag, detected=seen)
        assert w.open_s[0] == pytest.approx(n_open / FPS)
        assert bool(w.reliable[0]) is reliable
    # round(0.15 x 10) = 2-frame gaps are filled, round(0.2 x 10) = 2-frame blips removed
    flag = np.array([1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0], bool)
    assert smooth_open(flag, FPS, AudioWindowRule()).astype(int).tolist() == [1] * 8 + [0] * 8


def test_training_needs_two_valid_blocks_and_block_targets_are_label_means():
    n = 40
    labels = np.stack([np.arange(n, dtype=float), -np.arange(n, dtype=float)], axis=1)
    flag, seen = np.ones(n, bool), np.ones(n, bool)
    for n_valid_blocks, trained in ((1, False), (2, True)):
        valid = np.zeros(n, bool)
        valid[: 10 * n_valid_blocks] = True
        w = audio_windows(n, FPS, open_flag=flag, detected=seen, labels=labels, label_valid=valid)
        assert w.block_valid[0].tolist() == [True] * n_valid_blocks + [False] * (4 - n_valid_blocks)
        assert bool(w.train[0]) is trained
    assert w.block_targets[0, :2].tolist() == [[4.5, -4.5], [14.5, -14.5]]
    assert np.isnan(w.block_targets[0, 2:]).all()
    assert w.target[0].tolist() == [9.5, -9.5]  # mean of the valid frames 0..19


def test_partial_window_blocks_are_cut_at_its_end():
    n = 90  # last window [6, 9) s: frames 60..89; blocks [60,70), [70,80), [80,90), none
    labels = np.stack([np.arange(n, dtype=float)] * 2, axis=1)
    w = audio_windows(n, FPS, labels=labels, label_valid=np.ones(n, bool))
    assert w.block_targets[-1, :3, 0].tolist() == [64.5, 74.5, 84.5]
    assert w.block_valid[-1].tolist() == [True, True, True, False]
    assert not w.train.any()  # no mouth: nothing is reliable
