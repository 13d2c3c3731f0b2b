"""Tests for proxymix.mirroring_stats on constructed vectors with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from proxymix.mirroring_stats import (
    Thresholds,
    bootstrap_agreement,
    pair_items,
    plot_ranks,
    rank_agreement,
    seed_agreement,
    verdict,
)

# --------------------------------------------------------------------------------------------------------------
# rank_agreement
# --------------------------------------------------------------------------------------------------------------


def test_identical_rankings_give_one():
    # Different scales, same order: mirroring is about ranks, not absolute values.
    r = rank_agreement([0.1, 0.5, 0.2, 0.9], [1.0, 7.0, 3.0, 20.0])
    assert r["spearman"] == pytest.approx(1.0)
    assert r["kendall"] == pytest.approx(1.0)
    assert r["degenerate"] is False
    assert r["n_items"] == 4


def test_reversed_rankings_give_minus_one():
    r = rank_agreement([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert r["spearman"] == pytest.approx(-1.0)
    assert r["kendall"] == pytest.approx(-1.0)


def test_hand_computed_single_swap():
    # d = [0, 1, 1, 0], sum d^2 = 2: rho = 1 - 6*2 / (4*(16-1)) = 0.8.
    # 6 pairs, only (2,3) discordant: tau = (5 - 1) / 6 = 2/3.
    r = rank_agreement([1, 2, 3, 4], [1, 3, 2, 4])
    assert r["spearman"] == pytest.approx(0.8)
    assert r["kendall"] == pytest.approx(2.0 / 3.0)


def test_kendall_is_tau_b_with_ties():
    # x has one tied pair: n0 = 6, n1 = 1, n2 = 0; 5 concordant, 0 discordant.
    # tau-b = 5 / sqrt((6-1) * (6-0)) = 5 / sqrt(30); tau-a would be 5/6.
    r = rank_agreement([1, 2, 2, 3], [1, 2, 3, 4])
    assert r["kendall"] == pytest.approx(5.0 / math.sqrt(30.0))


def test_constant_vector_is_degenerate_and_not_nan():
    r = rank_agreement([0.3, 0.3, 0.3, 0.3], [1, 2, 3, 4])
    assert r == {"spearman": 0.0, "kendall": 0.0, "degenerate": True, "n_items": 4}
    r = rank_agreement([1, 2, 3, 4], [0.0, 0.0, 0.0, 0.0])
    assert r["degenerate"] is True


def test_nan_items_are_dropped_pairwise():
    # Dropping item 2 leaves [1, 2, 4] vs [1, 2, 4]: a perfect match on 3 items.
    r = rank_agreement([1, 2, np.nan, 4], [1, 2, 3, 4])
    assert r["n_items"] == 3
    assert r["spearman"] == pytest.approx(1.0)


def test_rank_agreement_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        rank_agreement([1, 2, 3], [1, 2])


# --------------------------------------------------------------------------------------------------------------
# bootstrap_agreement
# --------------------------------------------------------------------------------------------------------------


def _noisy_seeds(base: np.ndarray, n_seeds: int, scale: float, noise: float, rng_seed: int) -> np.ndarray:
    rng = np.random.default_rng(rng_seed)
    return scale * base[None, :] + noise * rng.standard_normal((n_seeds, base.size))


def test_bootstrap_point_estimate_is_agreement_of_seed_means():
    proxy = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 6.0]])  # mean [2, 2, 2, 5]
    target = np.array([[1.0, 3.0, 2.0, 4.0], [1.0, 3.0, 2.0, 4.0]])
    out = bootstrap_agreement(proxy, target, n_boot=50, seed=0)
    expected = rank_agreement(proxy.mean(axis=0), target.mean(axis=0))
    assert out["spearman"] == pytest.approx(expected["spearman"])
    assert out["kendall"] == pytest.approx(expected["kendall"])
    assert (out["n_items"], out["n_proxy_seeds"], out["n_target_seeds"]) == (4, 2, 2)


def test_bootstrap_ci_contains_point_and_is_deterministic():
    base = np.linspace(0.0, 1.0, 8)
    proxy = _noisy_seeds(base, n_seeds=5, scale=1.0, noise=0.15, rng_seed=1)
    target = _noisy_seeds(base, n_seeds=4, scale=3.0, noise=0.45, rng_seed=2)
    a = bootstrap_agreement(proxy, target, n_boot=300, seed=7)
    b = bootstrap_agreement(proxy, target, n_boot=300, seed=7)
    assert a == b
    for key in ("spearman", "kendall"):
        lo, hi = a[f"{key}_ci"]
        assert -1.0 <= lo <= a[key] <= hi <= 1.0
    # The noise is large enough that seeds disagree, so the interval must have width.
    assert a["spearman_ci"][0] < a["spearman_ci"][1]
    # Global numpy state must not leak in.
    np.random.seed(123)
    assert bootstrap_agreement(proxy, target, n_boot=300, seed=7) == a


def test_bootstrap_identical_seeds_give_zero_width_ci():
    # Every resample of identical seeds reproduces the same means, so every replicate equals the point value.
    proxy = np.tile([1.0, 2.0, 3.0, 4.0], (3, 1))
    target = np.tile([1.0, 3.0, 2.0, 4.0], (4, 1))
    out = bootstrap_agreement(proxy, target, n_boot=100, seed=0)
    assert out["spearman_ci"] == pytest.approx([0.8, 0.8])
    assert out["kendall_ci"] == pytest.approx([2 / 3, 2 / 3])
    assert out["n_boot_valid"] == 100


def test_bootstrap_drops_items_missing_on_every_seed():
    proxy = np.array([[1.0, 2.0, np.nan, 4.0, 5.0], [1.5, 2.5, np.nan, 4.5, 5.5]])
    # Item 1 is missing on one target seed only: kept, mean taken over the other seed.
    target = np.array([[1.0, np.nan, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    out = bootstrap_agreement(proxy, target, n_boot=50, seed=0)
    assert out["n_items"] == 4
    assert out["spearman"] == pytest.approx(1.0)
    assert all(math.isfinite(v) for v in out["spearman_ci"] + out["kendall_ci"])


def test_bootstrap_degenerate_point_estimate():
    proxy = np.full((3, 4), 0.2)  # the probe forgets every task equally
    target = np.array([[1.0, 2.0, 3.0, 4.0]] * 2)
    out = bootstrap_agreement(proxy, target, n_boot=20)
    assert out["degenerate"] is True
    assert out["spearman_ci"] == [0.0, 0.0]


def test_bootstrap_rejects_mismatched_items():
    with pytest.raises(ValueError):
        bootstrap_agreement(np.ones((2, 3)), np.ones((2, 4)))


# --------------------------------------------------------------------------------------------------------------
# seed_agreement
# --------------------------------------------------------------------------------------------------------------


def test_seed_agreement_hand_computed():
    # Pairs: (a, b) = 0.8, (a, c) = -1, (b, c) = -0.8 (b vs reversed order) -> mean = -1/3.
    m = np.array([[1, 2, 3, 4], [1, 3, 2, 4], [4, 3, 2, 1]], dtype=float)
    assert seed_agreement(m) == pytest.approx(-1.0 / 3.0)
    assert seed_agreement(np.tile([0.1, 0.4, 0.2], (3, 1))) == pytest.approx(1.0)


def test_seed_agreement_needs_two_seeds():
    assert seed_agreement(np.array([[1.0, 2.0, 3.0]])) is None


# --------------------------------------------------------------------------------------------------------------
# pair_items
# --------------------------------------------------------------------------------------------------------------


def test_pair_items_order_and_labels():
    nan = np.nan
    # Entry [i, j] = 10*i + j where defined (j > i); lower triangle and diagonal are NaN and must be ignored.
    m = np.array(
        [
            [nan, 1.0, 2.0, 3.0],
            [nan, nan, 12.0, 13.0],
            [nan, nan, nan, 23.0],
            [nan, nan, nan, nan],
        ]
    )
    values, labels = pair_items(m)
    assert labels == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    np.testing.assert_array_equal(values, [1.0, 2.0, 3.0, 12.0, 13.0, 23.0])


def test_pair_items_ignores_lower_triangle_and_keeps_leading_axes():
    m = np.arange(9, dtype=float).reshape(3, 3)  # lower triangle filled with junk on purpose
    stacked = np.stack([m, 2 * m])
    values, labels = pair_items(stacked)
    assert labels == [(0, 1), (0, 2), (1, 2)]
    np.testing.assert_array_equal(values, [[1.0, 2.0, 5.0], [2.0, 4.0, 10.0]])


def test_pair_items_rejects_non_square():
    with pytest.raises(ValueError):
        pair_items(np.zeros((3, 4)))


# --------------------------------------------------------------------------------------------------------------
# Thresholds and verdict
# --------------------------------------------------------------------------------------------------------------


def _stats(rho, lo=0.2, hi=0.95, n_items=6, degenerate=False, n_seeds=3):
    return {
        "spearman": rho,
        "spearman_ci": [lo, hi],
        "kendall": rho,
        "kendall_ci": [lo, hi],
        "degenerate": degenerate,
        "n_items": n_items,
        "n_proxy_seeds": n_seeds,
        "n_target_seeds": n_seeds,
    }


def test_thresholds_defaults_and_validation():
    th = Thresholds()
    assert (th.pass_spearman, th.pass_lower, th.warn_spearman, th.min_items) == (0.6, 0.0, 0.3, 3)
    with pytest.raises(ValueError):
        Thresholds(warn_spearman=0.7, pass_spearman=0.6)
    with pytest.raises(AttributeError):
        th.pass_spearman = 0.1  # frozen


def test_verdict_pass():
    status, reason = verdict(_stats(0.8, lo=0.4))
    assert status == "PASS"
    assert "0.800" in reason


def test_verdict_warn_between_thresholds():
    status, _ = verdict(_stats(0.45, lo=0.1))
    assert status == "WARN"


def test_verdict_warn_when_ci_lower_bound_not_positive():
    status, reason = verdict(_stats(0.7, lo=-0.1))
    assert status == "WARN"
    assert "lower bound" in reason


def test_verdict_fail_low_correlation():
    status, reason = verdict(_stats(0.1, lo=-0.5))
    assert status == "FAIL"
    assert "below 0.30" in reason


def test_verdict_fail_degenerate():
    stats = bootstrap_agreement(np.full((3, 5), 0.0), np.arange(10.0).reshape(2, 5), n_boot=10)
    status, reason = verdict(stats)
    assert status == "FAIL"
    assert "all tasks tie" in reason


def test_verdict_fail_too_few_items():
    # Two items always give rho = +-1: a perfect score must still fail.
    status, reason = verdict(_stats(1.0, lo=1.0, hi=1.0, n_items=2))
    assert status == "FAIL"
    assert "2 items" in reason


def test_verdict_noise_floor_downgrades_pass_to_warn():
    stats = _stats(0.9, lo=0.5)
    assert verdict(stats, noise_floor=0.8)[0] == "PASS"
    status, reason = verdict(stats, noise_floor=0.1)
    assert status == "WARN"
    assert "seed-to-seed agreement 0.100 is below" in reason
    assert "too noisy" in reason


def test_verdict_noise_floor_does_not_rescue_fail():
    assert verdict(_stats(0.1), noise_floor=0.1)[0] == "FAIL"


def test_verdict_single_seed_cannot_pass():
    # One seed per side gives a zero-width CI that trivially clears the lower-bound test.
    status, _ = verdict(_stats(0.9, lo=0.9, hi=0.9, n_seeds=1))
    assert status == "WARN"


def test_verdict_respects_custom_thresholds():
    stats = _stats(0.5, lo=0.2)
    assert verdict(stats)[0] == "WARN"
    assert verdict(stats, Thresholds(pass_spearman=0.5, warn_spearman=0.2))[0] == "PASS"


def test_verdict_end_to_end_on_mirrored_data():
    base = np.linspace(0.0, 1.0, 8)
    proxy = _noisy_seeds(base, n_seeds=4, scale=1.0, noise=0.05, rng_seed=3)
    target = _noisy_seeds(base, n_seeds=4, scale=2.0, noise=0.1, rng_seed=4)
    stats = bootstrap_agreement(proxy, target, n_boot=200, seed=0)
    floor = min(seed_agreement(proxy), seed_agreement(target))
    assert verdict(stats, noise_floor=floor)[0] == "PASS"


# --------------------------------------------------------------------------------------------------------------
# plot_ranks
# --------------------------------------------------------------------------------------------------------------


def test_plot_ranks_writes_png_atomically(tmp_path):
    values, labels = pair_items(np.triu(np.arange(16, dtype=float).reshape(4, 4), k=1))
    out = plot_ranks(values, values[::-1], labels, tmp_path / "ranks.png", "proxy vs target")
    assert out == tmp_path / "ranks.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # No temp file left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["ranks.png"]


def test_plot_ranks_rejects_mismatched_labels(tmp_path):
    with pytest.raises(ValueError):
        plot_ranks([1, 2, 3], [1, 2, 3], ["a", "b"], tmp_path / "x.png", "t")
    assert not any(tmp_path.iterdir())
