"""Continual-learning metrics over an accuracy matrix.

All functions take an accuracy matrix ``R`` of shape ``(T + 1, T)`` with scores in points (0-100):

* ``R[0, i]``: score on task ``i`` before training on any task of the sequence (the base model).
* ``R[t, i]`` for ``t = 1..T``: score on task ``i`` after training through the ``t``-th task.

Task indices are 0-based, so task ``i`` is trained in phase ``t = i + 1`` and ``R[i + 1, i]`` is its score
right after it was learned. The final row ``R[T]`` is the end of the sequence. Below, sums over ``i`` run over
task indices.

Definitions:

* Average accuracy: ``A = 1/T * sum_i R[T, i]``.
* Average incremental accuracy ("Avg", Rebuffi et al. 2017, iCaRL; Douillard et al. 2020, PODNet):
  ``1/T * sum_{t=1..T} mean(R[t, :t])``, the mean over phases of the accuracy on the tasks seen so far.
* Forgetting, max convention (Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning"):
  ``f_i = max_{l = i+1..T-1} R[l, i] - R[T, i]`` for ``i = 0..T-2``; ``F = mean_i f_i``. The best score on
  task ``i`` at any phase before the last (including right after training it) minus its final score.
* Forgetting, first convention (Avalanche ``Forgetting``): ``f_i = R[i+1, i] - R[T, i]``, the score right
  after training task ``i`` minus its final score.
* Backward transfer (Lopez-Paz & Ranzato 2017, GEM): ``BWT = 1/(T-1) * sum_{i=0..T-2} (R[T, i] - R[i+1, i])``,
  which equals ``-F_first``.
* Forward transfer (Lopez-Paz & Ranzato 2017, GEM): ``FWT = 1/(T-1) * sum_{i=1..T-1} (R[i, i] - R[0, i])``,
  the score on task ``i`` just before it is trained minus its score before anything. Row 0 plays the role
  of GEM's random-init baseline ``b_i``.

The last task cannot be forgotten, and the first has no earlier training to transfer from, so forgetting,
BWT and FWT average over ``T - 1`` tasks and are 0.0 when ``T == 1``. Forgetting is not clipped at zero: a
negative value means the task improved after it was learned.
"""

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

ForgettingConvention = Literal["max", "first"]


def _as_matrix(R: ArrayLike) -> np.ndarray:
    """Converts ``R`` to a float matrix and checks it has shape ``(T + 1, T)`` with ``T >= 1`` and no NaN.

    Args:
        R: Accuracy matrix as a nested list or array.

    Returns:
        ``R`` as a float64 array; read only here, so the caller's object is never modified.

    Raises:
        ValueError: If the shape is wrong or ``R`` contains NaN.
    """
    M = np.asarray(R, dtype=float)
    if M.ndim != 2 or M.shape[1] < 1 or M.shape[0] != M.shape[1] + 1:
        raise ValueError(
            f"accuracy matrix must have shape (T + 1, T) with T >= 1 (row 0 = before training), got {M.shape}"
        )
    if np.isnan(M).any():
        rows, cols = np.nonzero(np.isnan(M))
        raise ValueError(f"accuracy matrix contains NaN at (row, task) {list(zip(rows.tolist(), cols.tolist()))}")
    return M


def avg_accuracy(R: ArrayLike) -> float:
    """Mean final score over all tasks, ``mean(R[T, :])``.

    Args:
        R: Accuracy matrix of shape ``(T + 1, T)``.

    Returns:
        Average accuracy in points.
    """
    M = _as_matrix(R)
    return float(M[-1].mean())


def avg_incremental(R: ArrayLike) -> float:
    """Average incremental accuracy (iCaRL / PODNet "Avg"): ``mean_{t=1..T} mean(R[t, :t])``.

    Args:
        R: Accuracy matrix of shape ``(T + 1, T)``.

    Returns:
        Average over phases of the mean score on the tasks trained so far, in points.
    """
    M = _as_matrix(R)
    T = M.shape[1]
    return float(np.mean([M[t, :t].mean() for t in range(1, T + 1)]))


def forgetting_per_task(R: ArrayLike, convention: ForgettingConvention = "max") -> np.ndarray:
    """Forgetting of each task except the last.

    Args:
        R: Accuracy matrix of shape ``(T + 1, T)``.
        convention: ``"max"`` (Chaudhry et al. 2018): ``max_{l=i+1..T-1} R[l, i] - R[T, i]``.
            ``"first"`` (Avalanche): ``R[i+1, i] - R[T, i]``.

    Returns:
        Array of length ``T - 1`` with the forgetting of tasks ``0..T-2`` in points (empty when ``T == 1``).

    Raises:
        ValueError: If ``convention`` is unknown or ``R`` is invalid.
    """
    if convention not in ("max", "first"):
        raise ValueError(f"unknown forgetting convention {convention!r}; expected 'max' or 'first'")
    M = _as_matrix(R)
    T = M.shape[1]
    final = M[T, : T - 1]
    if convention == "first":
        reference = np.array([M[i + 1, i] for i in range(T - 1)])
    else:
        # Rows i+1..T-1 only: the final row is what we compare against, so it must not be in the max.
        reference = np.array([M[i + 1 : T, i].max() for i in range(T - 1)])
    return reference - final


def forgetting(R: ArrayLike) -> float:
    """Mean forgetting, max-over-history convention (Chaudhry et al. 2018); 0.0 when ``T == 1``.

    Args:
        R: Accuracy matrix of shape ``(T + 1, T)``.

    Returns:
        Mean forgetting over tasks ``0..T-2`` in points.
    """
    per_task = forgetting_per_task(R, "max")
    return float(per_task.mean()) if per_task.size else 0.0


def forgetting_first(R: ArrayLike) -> float:
    """Mean forgetting, first-value convention (Avalanche); 0.0 when ``T == 1``.

    Args:
        R: Accuracy matrix of shape ``(T + 1, T)``.

    Returns:
        Mean of ``R[i+1, i] - R[T, i]`` over tasks ``0..T-2`` in points.
    """
    per_task = forgetting_per_task(R, "first")
    return float(per_task.mean()) if per_task.size else 0.0


def bwt(R: ArrayLike) -> float:
    """Backward transfer (GEM): ``1/(T-1) * sum_{i=0..T-2} (R[T, i] - R[i+1, i])``; 0.0 when ``T == 1``.

    Args:
        R: Accuracy matrix of shape ``(T + 1, T)``.

    Returns:
        Backward transfer in points; negative means forgetting. Equals ``-forgetting_first(R)``.
    """
    M = _as_matrix(R)
    T = M.shape[1]
    if T == 1:
        return 0.0
    return float(np.mean([M[T, i] - M[i + 1, i] for i in range(T - 1)]))


def fwt(R: ArrayLike) -> float:
    """Forward transfer (GEM): ``1/(T-1) * sum_{i=1..T-1} (R[i, i] - R[0, i])``; 0.0 when ``T == 1``.

    Args:
        R: Accuracy matrix of shape ``(T + 1, T)``.

    Returns:
        Mean gain on each not-yet-trained task from the tasks before it, relative to the base model, in points.
    """
    M = _as_matrix(R)
    T = M.shape[1]
    if T == 1:
        return 0.0
    # R[i, i] is the row just before task i is trained (phase i trains task i - 1).
    return float(np.mean([M[i, i] - M[0, i] for i in range(1, T)]))


def summarize(R: ArrayLike) -> dict[str, float]:
    """All scalar metrics of ``R`` as plain Python floats.

    Args:
        R: Accuracy matrix of shape ``(T + 1, T)``.

    Returns:
        Dict with keys ``avg_accuracy``, ``avg_incremental``, ``forgetting``, ``forgetting_first``, ``bwt``,
        ``fwt``.
    """
    M = _as_matrix(R)  # validate once so a bad matrix fails before any metric is computed
    return {
        "avg_accuracy": avg_accuracy(M),
        "avg_incremental": avg_incremental(M),
        "forgetting": forgetting(M),
        "forgetting_first": forgetting_first(M),
        "bwt": bwt(M),
        "fwt": fwt(M),
    }
