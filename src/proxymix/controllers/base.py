"""The `Controller` seam: what a controller may see (`Observation`) and what it must return (slot weights).

Slots, in order: the current task, the safety buffer, then one replay buffer per earlier task in the order they
were trained. Only tasks seen so far ever appear: the observation is built from the past, so a controller cannot
read the future even by accident. Masked slots (an empty or disabled buffer) must get weight exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

CURRENT, SAFETY, REPLAY = "current", "safety", "replay"


@dataclass(frozen=True)
class Observation:
    """Everything a controller is allowed to know at a decision."""

    slots: tuple[str, ...]
    """Slot ids: 'current', 'safety', 'replay:<task>' (ids are for bookkeeping; features never use names)."""
    kinds: tuple[str, ...]
    """CURRENT, SAFETY or REPLAY per slot."""
    mask: tuple[bool, ...]
    """True where the slot can be sampled (seen and non-empty)."""
    history: tuple[tuple[float, ...], ...]
    """Validation losses of each slot's task at every decision since the slot appeared (last = now)."""
    ref_loss: tuple[float, ...]
    """Reference loss per slot: when its task finished training (replay, safety) or at phase start (current)."""
    phase_progress: float
    """Optimizer steps done in the current phase / steps in the phase, in [0, 1]."""
    n_seen: int
    """Domain tasks seen so far, the current one included."""

    @property
    def loss(self) -> np.ndarray:
        return np.array([h[-1] for h in self.history])

    @property
    def n_slots(self) -> int:
        return len(self.slots)


class Controller(Protocol):
    """A replay controller: `reset()` before a run, `act(obs)` at every decision."""

    name: str

    def reset(self) -> None: ...

    def act(self, obs: Observation) -> np.ndarray:
        """A probability vector over `obs.slots`, exactly 0 where `obs.mask` is False."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def check_weights(weights: np.ndarray, obs: Observation) -> np.ndarray:
    """Validate a controller's output (shape, non-negative, sums to 1, zero on masked slots)."""
    w = np.asarray(weights, dtype=np.float64)
    mask = np.asarray(obs.mask)
    if w.shape != (obs.n_slots,):
        raise ValueError(f"controller returned shape {w.shape}, expected ({obs.n_slots},)")
    if (w < 0).any() or not np.isfinite(w).all() or abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(f"controller returned an invalid probability vector {w}")
    if (w[~mask] != 0).any():
        raise ValueError(f"controller put weight on masked slots: {w} with mask {mask}")
    return w


def apply_floor(weights: np.ndarray, obs: Observation, floor: float) -> np.ndarray:
    """Guarantee the current task at least `floor` of the batch by mixing with a one-hot on it.

    w' = floor * e_current + (1 - floor) * w; masked slots stay exactly 0, the sum stays 1.
    """
    cur = obs.kinds.index(CURRENT)
    if floor <= 0 or weights[cur] >= floor:
        return weights
    out = (1.0 - floor) * np.asarray(weights, dtype=np.float64)
    out[cur] += floor
    return out
