import numpy as np
import pytest

from train.scoring.metrics import ccc, va_scores


def reference_ccc(x, y):
    # independent form: Lin (1989) via Pearson r and standard deviations, population moments
    r = np.corrcoef(x, y)[0, 1]
    sx, sy = np.std(x), np.std(y)
    return 2 * r * sx * sy / (sx**2 + sy**2 + (np.mean(x) - np.mean(y)) ** 2)


def test_matches_independent_formula_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.uniform(-1, 1, 1000)
        x = 0.6 * y + rng.normal(0.1, 0.3, 1000)
        assert ccc(x, y) == pytest.approx(reference_ccc(x, y), abs=1e-12)


def test_known_cases():
    y = np.sin(np.linspace(0, 10, 500))
    y = y - y.mean()  # negation gives -1 only for a zero-mean series
    assert ccc(y, y) == pytest.approx(1.0)
    assert ccc(-y, y) == pytest.approx(-1.0)
    assert ccc(np.full_like(y, 0.3), y) == pytest.approx(0.0)
    assert ccc(y + 0.5, y) < ccc(y + 0.1, y) < 1.0


def test_mask_and_concatenation_not_per_video_mean():
    rng = np.random.default_rng(1)
    a_true, b_true = rng.uniform(-1, 1, 200), rng.uniform(-1, 1, 300)
    a_pred, b_pred = a_true + 0.2, b_true * 0.5
    joint = ccc(np.r_[a_pred, b_pred], np.r_[a_true, b_true])
    assert joint == pytest.approx(reference_ccc(np.r_[a_pred, b_pred], np.r_[a_true, b_true]))
    assert joint != pytest.approx((ccc(a_pred, a_true) + ccc(b_pred, b_true)) / 2)
    mask = np.r_[np.ones(200, bool), np.zeros(300, bool)]
    assert ccc(np.r_[a_pred, b_pred], np.r_[a_true, b_true], mask) == pytest.approx(ccc(a_pred, a_true))


def test_va_scores_p_is_mean():
    rng = np.random.default_rng(2)
    true = rng.uniform(-1, 1, (400, 2))
    pred = true * [0.9, 0.4] + rng.normal(0, 0.1, (400, 2))
    s = va_scores(pred, true)
    assert s["P"] == pytest.approx((s["ccc_v"] + s["ccc_a"]) / 2)
    assert s["ccc_v"] > s["ccc_a"]


def test_nan_prediction_scores_nan_not_zero():
    y = np.linspace(-1, 1, 50)
    x = y.copy()
    x[7] = np.nan
    assert np.isnan(ccc(x, y))
    assert np.isnan(va_scores(np.stack([x, y], 1), np.stack([y, y], 1))["P"])
    keep = np.ones(50, bool)
    keep[7] = False
    assert ccc(x, y, keep) == pytest.approx(1.0)  # a NaN on a masked-out frame is not scored
