"""A gymnasium environment over one continual run: one step = one decision interval.

Observation: the leakage-free features of `controllers.features` (per-slot `feats`, `glob`, `mask`), padded to
`max_slots` for the declared space; `info["n_slots"]` says how many are real. Action: a mixture over the real
slots. Reward: potential-based shaping at every decision, plus the terminal score of the finished run.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from proxymix.config import RLConfig, RunConfig
from proxymix.controllers.base import CURRENT, Observation, apply_floor, check_weights
from proxymix.controllers.features import GLOBAL_FEATURES, SLOT_FEATURES, slot_features
from proxymix.engine import ContinualRun, RunResult


def potential(obs: Observation) -> float:
    """phi(s) = -mean over available buffers of (L / L_ref - 1): how much the past has been forgotten."""
    rises = [h[-1] / max(ref, 1e-6) - 1.0 for h, ref, kind, m in zip(obs.history, obs.ref_loss, obs.kinds, obs.mask)
             if m and kind != CURRENT]
    return -float(np.mean(np.clip(rises, -1.0, 5.0))) if rises else 0.0


def loss_forgetting(result: RunResult) -> float:
    """Mean over every task but the last of (final val loss / val loss right after it was trained - 1)."""
    L = result.L_full
    rises = [L[-1, i] / max(L[i + 1, i], 1e-6) - 1.0 for i in range(L.shape[1] - 1)]
    return float(np.mean(rises)) if rises else 0.0


def terminal_score(result: RunResult, rl: RLConfig) -> float:
    """(acc * avg_accuracy - f * forgetting + s * safety) / 100 - loss * loss_forgetting, lambdas from `rl`."""
    m = result.metrics
    safety = m.get("safety/score", 0.0)
    score = (rl.lambda_acc * m["cl/avg_accuracy"] - rl.lambda_f * m["cl/forgetting"] + rl.lambda_s * safety) / 100.0
    lambda_loss = rl.lambda_loss
    return score - (lambda_loss * loss_forgetting(result) if lambda_loss else 0.0)


class ProxyMixEnv(gym.Env):
    """Each `reset(options={"sequence": [...], "seed": n})` starts a fresh continual run of `cfg`."""

    metadata = {"render_modes": []}

    def __init__(self, cfg: RunConfig, max_slots: int = 16):
        self.cfg = cfg
        self.max_slots = max_slots
        F, G = len(SLOT_FEATURES), len(GLOBAL_FEATURES)
        self.observation_space = spaces.Dict({
            "feats": spaces.Box(-np.inf, np.inf, (max_slots, F), np.float32),
            "glob": spaces.Box(-np.inf, np.inf, (G,), np.float32),
            "mask": spaces.MultiBinary(max_slots),
        })
        self.action_space = spaces.Box(0.0, 1.0, (max_slots,), np.float64)
        self.run: ContinualRun | None = None
        self.result: RunResult | None = None

    def _encode(self, obs: Observation) -> tuple[dict, dict]:
        feats, glob = slot_features(obs)
        pad = np.zeros((self.max_slots, feats.shape[1]), np.float32)
        pad[: obs.n_slots] = feats
        mask = np.zeros(self.max_slots, np.int8)
        mask[: obs.n_slots] = obs.mask
        return {"feats": pad, "glob": glob, "mask": mask}, {"n_slots": obs.n_slots, "observation": obs}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        cfg = copy.deepcopy(self.cfg)
        if "sequence" in options:
            cfg.data.sequence = list(options["sequence"])
        if "seed" in options:
            cfg.seed = int(options["seed"])
        self.run = ContinualRun(cfg)
        self.loop = self.run.decisions()
        self.result = None
        self.obs = next(self.loop)
        return self._encode(self.obs)

    def step(self, action):
        w = np.asarray(action, dtype=np.float64)[: self.obs.n_slots]
        w = check_weights(apply_floor(w, self.obs, self.cfg.controller.current_floor), self.obs)
        rl = self.cfg.rl
        before = potential(self.obs)
        try:
            self.obs = self.loop.send(w)
        except StopIteration as stop:
            self.result = stop.value
            # phi(terminal) = 0, as potential-based shaping requires for episodic tasks
            reward = rl.shaping_coef * (0.0 - before) + terminal_score(self.result, rl)
            obs, info = self._encode(self.obs)
            info["result"] = self.result
            return obs, reward, True, False, info
        reward = rl.shaping_coef * (potential(self.obs) - before)
        obs, info = self._encode(self.obs)
        return obs, reward, False, False, info
