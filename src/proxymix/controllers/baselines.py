"""Baseline controllers: no replay, fixed ratio, uniform, loss-proportional, EXP3 (Online Data Mixing), DoReMi-style
reweighting and the static per-phase weights it leaves behind.

`multitask` (joint training on everything at once) is a reference, not a controller; the engine runs it as one
phase over the union of all tasks.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from proxymix.config import ConfigError
from proxymix.controllers.base import CURRENT, Observation


def _replay_mask(obs: Observation) -> np.ndarray:
    return np.array([m and k != CURRENT for m, k in zip(obs.mask, obs.kinds)])


def _current_onehot(obs: Observation) -> np.ndarray:
    w = np.zeros(obs.n_slots)
    w[obs.kinds.index(CURRENT)] = 1.0
    return w


class Stateless:
    """Mixin-free helper base for controllers with no state (protocol methods only)."""

    def reset(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class NoReplay(Stateless):
    name = "no_replay"

    def act(self, obs: Observation) -> np.ndarray:
        return _current_onehot(obs)


class FixedRatio(Stateless):
    """Replay share `ratio` spread uniformly over the available buffers (safety included), the rest current."""

    def __init__(self, ratio: float):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"fixed replay ratio must be in [0, 1], got {ratio}")
        self.ratio = ratio
        self.name = f"fixed:{ratio:g}"

    def act(self, obs: Observation) -> np.ndarray:
        replay = _replay_mask(obs)
        if not replay.any():
            return _current_onehot(obs)
        w = replay * (self.ratio / replay.sum())
        w[obs.kinds.index(CURRENT)] = 1.0 - self.ratio
        return w


class Uniform(Stateless):
    """Equal weight on every available slot, current task included."""

    name = "uniform"

    def act(self, obs: Observation) -> np.ndarray:
        m = np.asarray(obs.mask, dtype=np.float64)
        return m / m.sum()


class LossProportional(Stateless):
    """Replay share `ratio` over buffers in proportion to their normalised loss rise max(L/L_ref - 1, 0) + eps.

    A heuristic with the same inputs as the learned controller: buffers whose loss has risen most since their
    task was learned are replayed most; `eps` keeps every buffer alive.
    """

    def __init__(self, ratio: float = 0.3, eps: float = 0.05):
        self.ratio, self.eps = ratio, eps
        self.name = f"loss_prop:{ratio:g}"

    def act(self, obs: Observation) -> np.ndarray:
        replay = _replay_mask(obs)
        if not replay.any():
            return _current_onehot(obs)
        rise = np.maximum(obs.loss / np.asarray(obs.ref_loss) - 1.0, 0.0) + self.eps
        w = np.where(replay, rise, 0.0)
        w = w / w.sum() * self.ratio
        w[obs.kinds.index(CURRENT)] = 1.0 - self.ratio
        return w


class Exp3:
    """EXP3 over available slots with the normalised loss as reward (Online Data Mixing, Albalak et al. 2023).

    p = (1 - gamma) * softmax(log_w) + gamma / K; after each interval, every slot that was sampled (p > 0)
    receives the importance-weighted reward r_i / p_i with r_i = min(L_i / L_ref_i, 2) / 2 in [0, 1]: slots whose
    loss is high relative to their reference are mixed in more. New slots start at the mean log-weight.
    """

    def __init__(self, gamma: float = 0.1, lr: float = 0.3):
        self.gamma, self.lr = gamma, lr
        self.name = "exp3"
        self.reset()

    def reset(self) -> None:
        self.log_w: dict[str, float] = {}
        self.last_p: dict[str, float] = {}

    def act(self, obs: Observation) -> np.ndarray:
        reward = np.minimum(obs.loss / np.asarray(obs.ref_loss), 2.0) / 2.0
        for slot, r in zip(obs.slots, reward):
            p = self.last_p.get(slot, 0.0)
            if p > 0 and math.isfinite(r):
                self.log_w[slot] += self.lr * self.gamma * r / (p * max(len(self.last_p), 1))
        known = [self.log_w[s] for s in obs.slots if s in self.log_w]
        init = float(np.mean(known)) if known else 0.0
        for slot, m in zip(obs.slots, obs.mask):
            if m and slot not in self.log_w:
                self.log_w[slot] = init
        mask = np.asarray(obs.mask)
        logits = np.array([self.log_w.get(s, 0.0) for s in obs.slots])
        logits = np.where(mask, logits - logits[mask].max(), -np.inf)
        soft = np.where(mask, np.exp(logits), 0.0)
        p = (1 - self.gamma) * soft / soft.sum() + self.gamma * mask / mask.sum()
        p = np.where(mask, p, 0.0)
        self.last_p = {s: float(q) for s, q in zip(obs.slots, p) if q > 0}
        return p

    def state_dict(self) -> dict:
        return {"log_w": dict(self.log_w), "last_p": dict(self.last_p)}

    def load_state_dict(self, state: dict) -> None:
        self.log_w, self.last_p = dict(state["log_w"]), dict(state["last_p"])


class DoReMi:
    """Group-DRO reweighting of the replay buffers, as DoReMi does for pretraining domains (Xie et al. 2023,
    arXiv 2305.10429), with replay share `ratio` and the rest on the current task.

    DoReMi's excess loss is the proxy's loss minus a reference model's, in nats per token; here the reference of
    a buffer is the model right after its task was learned, so the excess is max(L_i - L_ref_i, 0). At every
    decision: log alpha_i += eta * excess_i, alpha = softmax(log alpha) over the available buffers, smoothed to
    (1 - c) alpha + c / K. A buffer that appears starts at the mean log-weight of the others. The run's per-phase
    mean weights are DoReMi's static output: `static:<run dir>` replays them on another model.

    The excess is a difference, not a ratio, as in DoReMi: a ratio to a reference loss near 0 (a task learned
    perfectly) is unbounded and hands all replay to one buffer within a decision.
    """

    def __init__(self, ratio: float = 0.3, eta: float = 1.0, smoothing: float = 0.05):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"doremi replay ratio must be in [0, 1], got {ratio}")
        self.ratio, self.eta, self.smoothing = ratio, eta, smoothing
        self.name = f"doremi:{ratio:g}:{eta:g}"
        self.reset()

    def reset(self) -> None:
        self.log_alpha: dict[str, float] = {}

    def act(self, obs: Observation) -> np.ndarray:
        replay = _replay_mask(obs)
        if not replay.any():
            return _current_onehot(obs)
        excess = np.maximum(obs.loss - np.asarray(obs.ref_loss), 0.0)
        known = [self.log_alpha[s] for s, r in zip(obs.slots, replay) if r and s in self.log_alpha]
        start = float(np.mean(known)) if known else 0.0
        for slot, r, e in zip(obs.slots, replay, excess):
            if r:
                self.log_alpha[slot] = self.log_alpha.get(slot, start) + self.eta * float(e)
        logits = np.array([self.log_alpha[s] if r else -np.inf for s, r in zip(obs.slots, replay)])
        alpha = np.exp(logits - logits[replay].max())
        alpha = (1.0 - self.smoothing) * alpha / alpha.sum() + self.smoothing * replay / replay.sum()
        w = np.where(replay, alpha, 0.0) * self.ratio
        w[obs.kinds.index(CURRENT)] = 1.0 - self.ratio
        return w

    def state_dict(self) -> dict:
        return {"log_alpha": dict(self.log_alpha)}

    def load_state_dict(self, state: dict) -> None:
        self.log_alpha = dict(state["log_alpha"])


class StaticWeights(Stateless):
    """Replays the per-phase mean mixture of a finished run (its mixture.csv), with no feedback from this run.

    Phase k is the k-th domain task of the sequence; the run being driven must train the same sequence (its slot
    ids are looked up by name). From a `doremi` run on the proxy, these are DoReMi-style static weights
    transferred from the proxy.
    """

    def __init__(self, run_dir: str | Path):
        path = Path(run_dir) / "mixture.csv"
        if not path.is_file():
            raise ValueError(f"{path}: not found (static:<dir> needs a finished run directory)")
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "task" not in rows[0]:
            raise ValueError(f"{path}: no decisions recorded (needs columns task, w:<slot>)")
        self.source = str(run_dir)
        self.name = f"static:{Path(run_dir).name}"
        tasks = list(dict.fromkeys(r["task"] for r in rows))
        self.table: list[dict[str, float]] = []
        for t in tasks:
            phase = [r for r in rows if r["task"] == t]
            self.table.append({k[2:]: float(np.mean([float(r[k]) for r in phase])) for k in rows[0]
                               if k.startswith("w:")})

    def act(self, obs: Observation) -> np.ndarray:
        k = obs.n_seen - 1
        if k >= len(self.table):
            raise ConfigError(f"static:{self.source}: recorded {len(self.table)} phases, this run reached "
                              f"phase {k + 1}")
        missing = [s for s in obs.slots if s not in self.table[k]]
        if missing:
            raise ConfigError(f"static:{self.source}: no recorded weight for slot(s) {missing}; it must be a run "
                              f"of the same task sequence")
        w = np.array([self.table[k][s] if m else 0.0 for s, m in zip(obs.slots, obs.mask)])
        if w.sum() <= 0:
            return _current_onehot(obs)
        return w / w.sum()


BASELINES = ("no_replay", "fixed:R", "uniform", "loss_prop[:R]", "exp3", "doremi[:R[:ETA]]", "static:<run dir>",
             "multitask")


def make_baseline(name: str):
    """A baseline controller from its CLI name; raises ValueError listing the known names."""
    head, _, arg = name.partition(":")
    try:
        if head == "no_replay" and not arg:
            return NoReplay()
        if head == "fixed" and arg:
            return FixedRatio(float(arg))
        if head == "uniform" and not arg:
            return Uniform()
        if head == "loss_prop":
            return LossProportional(float(arg)) if arg else LossProportional()
        if head == "exp3":
            return Exp3(float(arg)) if arg else Exp3()
        if head == "doremi":
            return DoReMi(*(float(a) for a in arg.split(":")[:2])) if arg else DoReMi()
        if head == "static" and arg:
            return StaticWeights(arg)
    except ValueError as exc:
        raise ValueError(f"bad controller {name!r}: {exc}") from None
    raise ValueError(f"unknown controller {name!r} (baselines: {', '.join(BASELINES)}, or a controller directory)")
