import numpy as np
import pytest

from ballistix.errors import ParameterError
from ballistix.evaluation import auc, equal_error_rate, error_rates, roc_curve


def test_perfect_separation():
    s, y = [9, 8, 7, 1, 0], [1, 1, 1, 0, 0]
    assert auc(s, y) == 1.0 and equal_error_rate(s, y) == 0.0
    r = error_rates(s, y, 6)
    assert r["false_positive_rate"] == 0 and r["false_negative_rate"] == 0


def test_reversed_and_ties():
    assert auc([0, 1], [1, 0]) == 0.0
    assert auc([1, 1], [1, 0]) == 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_auc_matches_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 10, 60).astype(float)
    y = rng.random(60) < 0.4
    pos, neg = s[y], s[~y]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc(s, y) == pytest.approx(brute)
    fpr, tpr, thr = roc_curve(s, y)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(brute)


def test_eer_symmetric_case():
    # one positive below one negative out of two each: both error rates 0.5 at the crossing
    assert equal_error_rate([3, 1, 2, 0], [1, 1, 0, 0]) == pytest.approx(0.5)


@pytest.mark.parametrize("s,y", [([], []), ([1, 2], [1, 1]), ([1, np.nan], [1, 0]), ([1, 2, 3], [1, 0])])
def test_bad_input(s, y):
    with pytest.raises(ParameterError):
        auc(s, y)
