"""The submission writer and its check: right rows in the sample's order, finite values in range."""

from __future__ import annotations

import numpy as np
import pytest

from train.results.predict import (
    SubmissionError,
    expected_locations,
    frame_location,
    sample_locations,
    validate_submission,
    write_submission,
)

HEADER = "image_location,valence,arousal"


@pytest.fixture
def sample(tmp_path):
    rows = [frame_location("b_left", k) for k in (1, 2, 3)] + [frame_location("a", k) for k in (1, 2)]
    path = tmp_path / "sample.txt"
    path.write_text(HEADER + "\n" + "\n".join(f"{r},0,0" for r in rows) + "\n")
    return path


def test_write_in_sample_order_and_validate(sample, tmp_path):
    preds = {"a": np.array([[0.1, 0.2], [0.3, 0.4]]), "b_left": np.array([[2.0, -2.0], [0, 0], [0.5, 0.5]])}
    expected = sample_locations(sample)
    assert expected[0] == "b_left/00001.jpg"
    out = write_submission(tmp_path / "sub.csv", expected, preds)
    assert validate_submission(out, expected) == 5
    lines = out.read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[1] == "b_left/00001.jpg,1.000000,-1.000000"  # clipped
    assert lines[4] == "a/00001.jpg,0.100000,0.200000"
    assert expected_locations(["a"], {"a": 2}) == ["a/00001.jpg", "a/00002.jpg"]
    with pytest.raises(SubmissionError, match="no predictions for track 'a'"):
        write_submission(tmp_path / "x.csv", expected, {"b_left": preds["b_left"]})


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda lines: lines[:-1], "5 expected"),  # a missing frame
        (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], "was expected"),  # wrong order
        (lambda lines: [*lines[:2], lines[2].replace(",0.5,", ",1.5,"), *lines[3:]], "outside"),
        (lambda lines: [*lines[:2], lines[2].replace(",0.5,", ",nan,"), *lines[3:]], "not finite"),
        (lambda lines: ["image,valence,arousal", *lines[1:]], "header"),
        (lambda lines: [*lines, "a/00003.jpg,0,0"], "extra row"),
        (lambda lines: [*lines[:2], "b_left/00002.jpg,0.5", *lines[3:]], "3 fields"),
    ],
)
def test_broken_submissions_are_refused(sample, tmp_path, mutate, message):
    expected = sample_locations(sample)
    good = [HEADER] + [f"{loc},0.5,0.5" for loc in expected]
    assert validate_submission(_write(tmp_path / "good.csv", good), expected) == 5
    with pytest.raises(SubmissionError, match=message):
        validate_submission(_write(tmp_path / "bad.csv", mutate(good)), expected)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path
