"""Statistics for the forgetting-mirroring check (PAPER.md, "Forgetting mirroring").

Before a controller learned on the proxy is transferred, we check that proxy and target *rank* task
vulnerability alike; absolute losses may differ across scales, the ordering should not. An "item" is either a
task (vulnerability = relative rise of its validation loss, or its accuracy drop, after later tasks under a probe
schedule) or an (earlier task, later task) pair from a damage matrix (see :func:`pair_items`).

Everything here is pure numpy/scipy so the gate can run anywhere, without torch:

* :func:`rank_agreement` -- Spearman rho and Kendall tau-b of two vectors.
* :func:`bootstrap_agreement` -- the same on seed-means, with a percentile bootstrap CI over seeds.
* :func:`seed_agreement` -- the noise floor: how well seeds of one model agree with each other.
* :class:`Thresholds` and :func:`verdict` -- the PASS / WARN / FAIL gate.
* :func:`plot_ranks` -- proxy rank vs target rank scatter for the report.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = [
    "Thresholds",
    "bootstrap_agreement",
    "pair_items",
    "plot_ranks",
    "rank_agreement",
    "seed_agreement",
    "verdict",
]


# --------------------------------------------------------------------------------------------------------------
# Rank correlation
# --------------------------------------------------------------------------------------------------------------


def rank_agreement(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Spearman rho and Kendall tau-b between two vulnerability vectors.

    Items where either vector is NaN are dropped first (a missing measurement is not a tie).

    Args:
        x: Vulnerability per item on one side (e.g. proxy), shape ``(n_items,)``.
        y: Vulnerability per item on the other side (e.g. target), same shape.

    Returns:
        ``{"spearman": float, "kendall": float, "degenerate": bool, "n_items": int}``. ``kendall`` is tau-b,
        which corrects for ties. If either vector is constant over the kept items (or fewer than two items are
        left) the correlation is undefined; both coefficients are then ``0.0`` and ``degenerate`` is ``True``.
        The returned floats are never NaN.

    Raises:
        ValueError: If ``x`` and ``y`` are not 1-D vectors of equal length.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(x.size)

    # Check constancy ourselves rather than relying on scipy: it warns and returns NaN, and a NaN would poison
    # every mean and percentile downstream.
    if n < 2 or np.ptp(x) == 0.0 or np.ptp(y) == 0.0:
        return {"spearman": 0.0, "kendall": 0.0, "degenerate": True, "n_items": n}

    rho = float(sps.spearmanr(x, y).statistic)
    tau = float(sps.kendalltau(x, y, variant="b").statistic)
    # Non-constant inputs give finite values; the guard keeps the "never NaN" promise if scipy ever disagrees.
    return {
        "spearman": rho if np.isfinite(rho) else 0.0,
        "kendall": tau if np.isfinite(tau) else 0.0,
        "degenerate": False,
        "n_items": n,
    }


def _seed_mean(matrix: np.ndarray) -> np.ndarray:
    """NaN-ignoring mean over seeds (axis 0); an item missing on every seed stays NaN.

    Written out instead of ``np.nanmean`` so an all-NaN column does not raise a RuntimeWarning.
    """
    present = ~np.isnan(matrix)
    counts = present.sum(axis=0)
    sums = np.where(present, matrix, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _as_seed_matrix(a: np.ndarray | Sequence[Sequence[float]], name: str) -> np.ndarray:
    """Coerce to a float array of shape ``(n_seeds, n_items)``; a 1-D input is one seed."""
    m = np.asarray(a, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n_seeds, n_items) with n_seeds >= 1, got {m.shape}")
    return m


def bootstrap_agreement(
    proxy: np.ndarray | Sequence[Sequence[float]],
    target: np.ndarray | Sequence[Sequence[float]],
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Rank agreement of seed-mean vulnerabilities with a percentile bootstrap CI over seeds.

    The point estimate is :func:`rank_agreement` of the seed-mean vectors. Each bootstrap replicate resamples
    seeds with replacement, independently on the proxy and the target side (they are different runs, so there
    is no pairing of seeds), recomputes both seed-means and both correlations. The CI is the central ``ci``
    percentile interval of the replicates.

    Missing data: NaN entries are ignored in a seed-mean; an item whose point-estimate mean is NaN on either side
    is dropped altogether. Replicates that are degenerate (constant means) are left out of the percentiles,
    since their ``0.0`` is a placeholder, not a measurement.

    Note:
        With one seed on a side that side contributes no resampling noise; with one seed on both sides every
        replicate equals the point estimate and the CI has zero width. :func:`verdict` will not PASS that.

    Args:
        proxy: Vulnerabilities, shape ``(n_proxy_seeds, n_items)`` (a 1-D vector counts as one seed).
        target: Vulnerabilities, shape ``(n_target_seeds, n_items)``, items in the same order as ``proxy``.
        n_boot: Number of bootstrap replicates.
        seed: Seed for ``np.random.default_rng``; the result is a deterministic function of the inputs and it.
        ci: Coverage of the confidence interval, in (0, 1).

    Returns:
        Dict with ``spearman``, ``spearman_ci`` (``[lo, hi]``), ``kendall``, ``kendall_ci``, ``degenerate``
        (of the point estimate), ``n_items`` (items kept), ``n_proxy_seeds``, ``n_target_seeds``, ``n_boot`` and
        ``n_boot_valid`` (non-degenerate replicates). If the point estimate is degenerate both CIs are
        ``[0.0, 0.0]``.

    Raises:
        ValueError: On mismatched item counts, ``n_boot < 1`` or ``ci`` outside (0, 1).
    """
    p = _as_seed_matrix(proxy, "proxy")
    t = _as_seed_matrix(target, "target")
    if p.shape[1] != t.shape[1]:
        raise ValueError(f"proxy has {p.shape[1]} items but target has {t.shape[1]}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")

    # Fix the item set once from the full-data means so every replicate ranks the same items.
    keep = ~(np.isnan(_seed_mean(p)) | np.isnan(_seed_mean(t)))
    p, t = p[:, keep], t[:, keep]
    point = rank_agreement(_seed_mean(p), _seed_mean(t))

    result: dict[str, Any] = {
        "spearman": point["spearman"],
        "kendall": point["kendall"],
        "degenerate": point["degenerate"],
        "n_items": int(keep.sum()),
        "n_proxy_seeds": int(p.shape[0]),
        "n_target_seeds": int(t.shape[0]),
        "n_boot": int(n_boot),
    }
    if point["degenerate"]:
        result.update(spearman_ci=[0.0, 0.0], kendall_ci=[0.0, 0.0], n_boot_valid=0)
        return result

    rng = np.random.default_rng(seed)
    rhos = np.full(n_boot, np.nan)
    taus = np.full(n_boot, np.nan)
    n_p, n_t = p.shape[0], t.shape[0]
    for b in range(n_boot):
        # A replicate can leave an item NaN (only seeds that missed it were drawn); rank_agreement drops it.
        rep = rank_agreement(
            _seed_mean(p[rng.integers(0, n_p, size=n_p)]),
            _seed_mean(t[rng.integers(0, n_t, size=n_t)]),
        )
        if not rep["degenerate"]:
            rhos[b], taus[b] = rep["spearman"], rep["kendall"]

    valid = ~np.isnan(rhos)
    result["n_boot_valid"] = int(valid.sum())
    if not valid.any():
        # Only when every draw picked constant seeds (possible with a tiny n_boot); fall back to the point
        # value rather than return a NaN interval.
        result.update(spearman_ci=[point["spearman"]] * 2, kendall_ci=[point["kendall"]] * 2)
        return result
    q = [100.0 * (1.0 - ci) / 2.0, 100.0 * (1.0 + ci) / 2.0]
    result["spearman_ci"] = [float(v) for v in np.percentile(rhos[valid], q)]
    result["kendall_ci"] = [float(v) for v in np.percentile(taus[valid], q)]
    return result


def seed_agreement(matrix: np.ndarray | Sequence[Sequence[float]]) -> float | None:
    """Noise floor: mean pairwise Spearman rho between the seeds of one model.

    If two seeds of the *same* model rank vulnerability differently, a low proxy-target agreement says nothing
    about transfer; this number tells the two apart. Degenerate pairs (a constant seed) count as ``0.0``, which
    lowers the floor and so errs towards distrusting the measurement.

    Args:
        matrix: Vulnerabilities, shape ``(n_seeds, n_items)``; NaN entries are dropped pairwise.

    Returns:
        The mean over all ``n_seeds * (n_seeds - 1) / 2`` seed pairs, or ``None`` with fewer than two seeds.
    """
    m = _as_seed_matrix(matrix, "matrix")
    if m.shape[0] < 2:
        return None
    rhos = [rank_agreement(m[a], m[b])["spearman"] for a, b in itertools.combinations(range(m.shape[0]), 2)]
    return float(np.mean(rhos))


def pair_items(vuln_matrix: np.ndarray | Sequence[Sequence[float]]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Flatten an (earlier task, later task) damage matrix into an item vector.

    Entry ``[i, j]`` is the damage to task ``i`` caused by training task ``j``; it is defined only for ``j > i``
    (a task cannot be damaged by itself or by one trained before it), so only the strict upper triangle is read
    and everything else is ignored. The order is row-major: ``(0, 1), (0, 2), ..., (0, T-1), (1, 2), ...``.
    It depends only on ``T``, never on the values, so vectors from different seeds and from proxy and target
    line up item for item. A NaN inside the upper triangle is kept in place as a missing measurement;
    :func:`bootstrap_agreement` handles it.

    Args:
        vuln_matrix: Array of shape ``(..., T, T)``; leading axes (e.g. seeds) are kept, so a stack of
            per-seed matrices of shape ``(n_seeds, T, T)`` becomes ``(n_seeds, T*(T-1)/2)``.

    Returns:
        ``(values, labels)``: values of shape ``(..., T*(T-1)/2)`` and the matching list of ``(i, j)`` labels.

    Raises:
        ValueError: If the last two axes are not square.
    """
    m = np.asarray(vuln_matrix, dtype=float)
    if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
        raise ValueError(f"vuln_matrix must have shape (..., T, T), got {m.shape}")
    rows, cols = np.triu_indices(m.shape[-1], k=1)  # row-major strict upper triangle
    return m[..., rows, cols], [(int(i), int(j)) for i, j in zip(rows, cols)]


# --------------------------------------------------------------------------------------------------------------
# Gate
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of the mirroring gate (see :func:`verdict`)."""

    pass_spearman: float = 0.6
    """Point Spearman rho needed to PASS."""
    pass_lower: float = 0.0
    """The lower bound of the Spearman CI must exceed this to PASS (the agreement is positive beyond noise)."""
    warn_spearman: float = 0.3
    """Below this point Spearman the gate FAILs; also the minimum acceptable seed-to-seed noise floor."""
    min_items: int = 3
    """Fewer ranked items than this FAIL: with two items rho is always +-1 and means nothing."""

    def __post_init__(self) -> None:
        for name in ("pass_spearman", "pass_lower", "warn_spearman"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [-1, 1], got {value}")
        if self.warn_spearman > self.pass_spearman:
            raise ValueError(
                f"warn_spearman ({self.warn_spearman}) must not exceed pass_spearman ({self.pass_spearman})"
            )
        if self.min_items < 2:
            raise ValueError(f"min_items must be >= 2, got {self.min_items}")


def verdict(
    stats: dict[str, Any],
    thresholds: Thresholds = Thresholds(),
    noise_floor: float | None = None,
) -> tuple[str, str]:
    """Turn mirroring statistics into a PASS / WARN / FAIL gate decision.

    Rules, checked in this order (``th`` = ``thresholds``):

    1. FAIL if ``n_items < th.min_items`` (default 3): too few items for a ranking to mean anything.
    2. FAIL if the items are degenerate (all-equal vulnerabilities on either side): all tasks tie, the probe
       forgets everything or nothing, and any correlation would be an artifact.
    3. FAIL if the point Spearman is below ``th.warn_spearman`` (default 0.3).
    4. WARN if ``noise_floor`` is given and below ``th.warn_spearman``: the seeds of one model do not agree with
       each other, so the measurement is too noisy to certify transfer. Pass the lower of
       ``seed_agreement(proxy)`` and ``seed_agreement(target)``.
    5. WARN if there is no Spearman CI, or either side has a single seed (the CI then has no seed spread).
    6. PASS if Spearman ``>= th.pass_spearman`` (default 0.6) and its CI lower bound ``> th.pass_lower``
       (default 0.0).
    7. Otherwise WARN.

    Args:
        stats: Output of :func:`bootstrap_agreement` (the output of :func:`rank_agreement` also works but can at
            best WARN, as it has no CI).
        thresholds: Gate thresholds.
        noise_floor: Seed-to-seed agreement (see :func:`seed_agreement`), or ``None`` to skip that check.

    Returns:
        ``(status, reason)`` with status in ``{"PASS", "WARN", "FAIL"}`` and a one-line reason.
    """
    th = thresholds
    rho = float(stats["spearman"])
    n_items = int(stats.get("n_items", 0))
    ci = stats.get("spearman_ci")

    if n_items < th.min_items:
        return "FAIL", f"only {n_items} items (need >= {th.min_items}); a ranking of so few items means nothing"
    if stats.get("degenerate", False):
        return "FAIL", "all tasks tie: the probe forgets everything or nothing; correlation would be an artifact"
    if not np.isfinite(rho) or rho < th.warn_spearman:
        return (
            "FAIL",
            f"Spearman {rho:.3f} is below {th.warn_spearman:.2f}: proxy and target rank vulnerability differently",
        )
    if noise_floor is not None and noise_floor < th.warn_spearman:
        return (
            "WARN",
            f"seed-to-seed agreement {noise_floor:.3f} is below {th.warn_spearman:.2f}, measurement too noisy",
        )
    if ci is None:
        return "WARN", f"Spearman {rho:.3f} has no confidence interval; run bootstrap_agreement over seeds"
    if min(stats.get("n_proxy_seeds", 2), stats.get("n_target_seeds", 2)) < 2:
        return "WARN", f"Spearman {rho:.3f} from a single seed on one side; the CI does not reflect seed noise"
    lo, hi = float(ci[0]), float(ci[1])
    if rho >= th.pass_spearman and lo > th.pass_lower:
        return (
            "PASS",
            f"Spearman {rho:.3f} (CI [{lo:.3f}, {hi:.3f}]) >= {th.pass_spearman:.2f}"
            f" with lower bound > {th.pass_lower:.2f}",
        )
    if rho < th.pass_spearman:
        return "WARN", f"Spearman {rho:.3f} is between {th.warn_spearman:.2f} and {th.pass_spearman:.2f}"
    return "WARN", f"Spearman {rho:.3f} but CI lower bound {lo:.3f} is not above {th.pass_lower:.2f}"


# --------------------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------------------


def plot_ranks(
    proxy_mean: Sequence[float] | np.ndarray,
    target_mean: Sequence[float] | np.ndarray,
    labels: Sequence[Any],
    path: str | os.PathLike[str],
    title: str,
) -> Path:
    """Scatter proxy rank against target rank, one labelled point per item, and save a PNG atomically.

    Rank 1 is the most vulnerable item (largest value); ties get their average rank. Perfect mirroring puts
    every point on the dashed diagonal. Items NaN on either side are left out.

    Args:
        proxy_mean: Seed-mean vulnerability per item on the proxy.
        target_mean: Seed-mean vulnerability per item on the target, same item order.
        labels: One label per item (task name, or an ``(i, j)`` pair from :func:`pair_items`).
        path: Output PNG path; its directory must exist.
        title: Figure title; the Spearman/Kendall values are appended below it.

    Returns:
        The path written.

    Raises:
        ValueError: If the lengths of the three sequences differ.
    """
    # Figure + Agg canvas directly instead of pyplot: no global backend switch and no figure registry to leak.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray(proxy_mean, dtype=float)
    y = np.asarray(target_mean, dtype=float)
    labels = list(labels)
    if not (x.shape == y.shape == (len(labels),)):
        raise ValueError(f"lengths differ: proxy {x.shape}, target {y.shape}, labels {len(labels)}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    labels = [lab for lab, k in zip(labels, keep) if k]
    agree = rank_agreement(x, y)
    # rankdata ranks ascending; negate so that rank 1 is the most vulnerable item.
    rx = sps.rankdata(-x) if x.size else x
    ry = sps.rankdata(-y) if y.size else y

    fig = Figure(figsize=(7.0, 6.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    n = max(int(x.size), 1)
    ax.plot([0.5, n + 0.5], [0.5, n + 0.5], linestyle="--", color="grey", linewidth=1, label="perfect mirroring")
    ax.scatter(rx, ry, zorder=3)
    for lab, px, py in zip(labels, rx, ry):
        text = f"{lab[0]}→{lab[1]}" if isinstance(lab, tuple) and len(lab) == 2 else str(lab)
        ax.annotate(text, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlim(0.5, n + 0.5)
    ax.set_ylim(0.5, n + 0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("proxy vulnerability rank (1 = most forgotten)")
    ax.set_ylabel("target vulnerability rank (1 = most forgotten)")
    stat_line = (
        "degenerate: ties on one side"
        if agree["degenerate"]
        else f"Spearman {agree['spearman']:.3f}, Kendall {agree['kendall']:.3f}, n={agree['n_items']}"
    )
    ax.set_title(f"{title}\n{stat_line}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()

    # Write beside the target then rename: a reader (or a crash) never sees a half-written PNG.
    out = Path(path)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return out
