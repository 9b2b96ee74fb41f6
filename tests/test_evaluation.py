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


def test_roc_ties_make_one_point_and_count_half_in_the_auc():
    fpr, tpr, thr = roc_curve([3, 2, 2, 2, 1], [1, 1, 0, 0, 0])
    assert thr.tolist() == [np.inf, 3, 2, 1]
    assert np.allclose(tpr, [0, 0.5, 1, 1]) and np.allclose(fpr, [0, 0, 2 / 3, 1])
    assert auc([3, 2, 2, 2, 1], [1, 1, 0, 0, 0]) == pytest.approx(5 / 6)  # 3 beats all; 2 ties two, beats one


def _roc_per_threshold(s, y):
    """The definition, one count per distinct score: O(n^2), as roc_curve was before it sorted once."""
    thr = np.unique(s)[::-1]
    tp = np.array([(s[y] >= t).sum() for t in thr]) / y.sum()
    fp = np.array([(s[~y] >= t).sum() for t in thr]) / (~y).sum()
    return np.r_[0.0, fp], np.r_[0.0, tp], np.r_[np.inf, thr]


@pytest.mark.parametrize("seed, decimals", [(0, None), (1, 1), (2, 0), (3, 3)])
def test_roc_and_auc_equal_the_quadratic_definitions(seed, decimals):
    rng = np.random.default_rng(seed)
    y = rng.random(400) < 0.3
    s = rng.normal(size=400) + y
    if decimals is not None:  # many ties
        s = np.round(s, decimals)
    for got, want in zip(roc_curve(s, y), _roc_per_threshold(s, y)):
        assert got.shape == want.shape and np.allclose(got, want, rtol=0, atol=1e-12)
    pos, neg = s[y], s[~y]
    pairwise = ((pos[:, None] > neg) + 0.5 * (pos[:, None] == neg)).mean()
    assert abs(auc(s, y) - pairwise) <= 1e-12


def test_eer_symmetric_case():
    # one positive below one negative out of two each: both error rates 0.5 at the crossing
    assert equal_error_rate([3, 1, 2, 0], [1, 1, 0, 0]) == pytest.approx(0.5)


@pytest.mark.parametrize("s,y", [([], []), ([1, 2], [1, 1]), ([1, np.nan], [1, 0]), ([1, 2, 3], [1, 0])])
def test_bad_input(s, y):
    with pytest.raises(ParameterError):
        auc(s, y)


def test_grouping_scores_perfect_and_merged():
    from ballistix.evaluation import grouping_scores

    truth = {"a": 1, "b": 1, "c": 2, "d": 2, "e": 3}
    perfect = grouping_scores([{"a", "b"}, {"c", "d"}, {"e"}], truth)
    assert perfect["precision"] == perfect["recall"] == perfect["adjusted_rand_index"] == 1.0
    assert perfect["merged_groups"] == 0
    merged = grouping_scores([{"a", "b", "c", "d"}, {"e"}], truth)
    assert merged["recall"] == 1.0 and merged["precision"] == pytest.approx(2 / 6) and merged["merged_groups"] == 1
    stray = grouping_scores([{"a", "b", "e"}, {"c", "d"}], truth)
    assert stray["merged_groups"] == 0 and stray["precision"] == pytest.approx(2 / 4)
    split = grouping_scores([{"a"}, {"b"}, {"c", "d"}, {"e"}], truth)
    assert split["precision"] == 1.0 and split["recall"] == 0.5 and split["adjusted_rand_index"] < 1


def test_grouping_scores_ari_matches_a_known_value():
    from ballistix.evaluation import grouping_scores

    # sklearn.metrics.adjusted_rand_score([0, 0, 1, 1], [0, 0, 1, 2]) == 0.5714285714285715
    r = grouping_scores([{0, 1}, {2}, {3}], {0: 0, 1: 0, 2: 1, 3: 1})
    assert r["adjusted_rand_index"] == pytest.approx(0.5714285714285715)


@pytest.mark.parametrize("groups, match", [([{"a"}, {"a", "b"}], "two groups"), ([{"a"}], "same items")])
def test_grouping_scores_bad_input(groups, match):
    from ballistix.evaluation import grouping_scores

    with pytest.raises(ParameterError, match=match):
        grouping_scores(groups, {"a": 1, "b": 2})


@pytest.mark.parametrize("max_fpr, tpr, thr", [(0.0, 0.5, 0.8), (0.25, 0.75, 0.6), (0.5, 1.0, 0.4), (1.0, 1.0, 0.1)])
def test_tpr_at_fpr_picks_the_best_rule_within_the_false_positive_budget(max_fpr, tpr, thr):
    from ballistix.evaluation import tpr_at_fpr

    scores = [0.9, 0.8, 0.6, 0.4, 0.7, 0.5, 0.3, 0.1]
    same = [True, True, True, True, False, False, False, False]
    r = tpr_at_fpr(scores, same, max_fpr)
    assert r["tpr"] == tpr and r["threshold"] == thr and r["fpr"] <= max_fpr


@pytest.mark.parametrize("max_fpr", [-0.1, 1.5])
def test_tpr_at_fpr_refuses_a_budget_outside_0_1(max_fpr):
    from ballistix.evaluation import tpr_at_fpr

    with pytest.raises(ParameterError, match="max_fpr"):
        tpr_at_fpr([0.9, 0.1], [True, False], max_fpr)
