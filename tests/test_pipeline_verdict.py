"""Issue 38: the one line a pipeline ends with: did DSR beat the best bicubic row beyond noise?"""

from __future__ import annotations

from engine.sweep.margins import verdict


def _split(difference: float, p: float, best: str = "bicubic") -> dict:
    return {"dsr": {"rank1": 0.60}, "bicubic": {"rank1": 0.50}, "bicubic_base": {"rank1": 0.40},
            "comparisons": {f"dsr_vs_{best}": {"difference": difference, "interval": [difference - 0.03,
                                                                                      difference + 0.03],
                                               "mcnemar": {"p": p}, "significant": p < 0.05}}}


def test_one_split_verdicts_name_the_best_bicubic_row_and_say_beyond_noise_or_not():
    beat = verdict(_split(0.10, 0.001), folds=False)
    assert beat.startswith("verdict: DSR beat the best bicubic row") and "beyond noise: +10.0 [+7.0, +13.0]" in beat
    assert "p = 0.001" in beat
    within = verdict(_split(0.01, 0.40), folds=False)
    assert within.startswith("verdict: DSR did not beat") and "+1.0 [-2.0, +4.0]" in within
    below = verdict(_split(-0.10, 0.001), folds=False)
    assert below.startswith("verdict: DSR is below the best bicubic row")
    assert verdict({"bicubic": {"rank1": 0.5}}, folds=False) is None       # no DSR row: no verdict


def _folds(values: list[float], significant: int) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    stat = {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n, "values": values}
    rank = {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5, "n": n, "values": [0.5] * n}
    return {"rows": {"dsr": {"rank1": {**rank, "mean": 0.55}}, "bicubic": {"rank1": rank}},
            "comparisons": {"dsr_vs_bicubic": {"difference": stat, "significant_folds": significant}}}


def test_fold_verdicts_count_the_folds_beyond_noise():
    assert verdict(_folds([0.05, 0.06, 0.04], 3), folds=True).startswith(
        "verdict: DSR beat the best bicubic row (bicubic")
    assert "in all 3 folds (margin +5.0 ± 1.0" in verdict(_folds([0.05, 0.06, 0.04], 3), folds=True)
    some = verdict(_folds([0.05, 0.01, 0.02], 1), folds=True)
    assert some.startswith("verdict: DSR did not beat") and "in 1 of 3 folds" in some
    assert "below it in every fold" in verdict(_folds([-0.05, -0.06, -0.04], 3), folds=True)
