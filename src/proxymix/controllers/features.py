"""Leakage-free, scale-free controller features, computed only from an `Observation`.

Per slot (current task, safety buffer, each earlier task's buffer):

| feature        | definition                                   | why it transfers across model scales            |
|----------------|----------------------------------------------|-------------------------------------------------|
| log_ratio      | log(L / L_ref), clipped to [-3, 3]           | a ratio to the slot's own reference cancels the |
|                |                                              | model's absolute loss level                     |
| trend          | (L_now - L_{k decisions ago}) / L_ref        | direction of forgetting/learning, also relative |
| gap_to_best    | (L_now - min history) / L_ref                | how far the slot has slid from its best         |
| is_current     | 1 for the current task                       | role flags, no task identity                    |
| is_safety      | 1 for the alignment/safety buffer            |                                                 |
| is_replay      | 1 for an earlier task's buffer               |                                                 |

Globals: progress within the current phase (steps done / phase length, known when a phase starts) and
n_seen / (n_seen + 1) for n_seen domain tasks seen so far: monotone in how much lies behind, bounded, and it needs
no knowledge of how many tasks will follow. Never used: task names, the total sequence length, absolute losses,
anything about future tasks, or anything inside the model.
"""

from __future__ import annotations

import numpy as np

from proxymix.controllers.base import CURRENT, REPLAY, SAFETY, Observation

SCHEMA_VERSION = 1
SLOT_FEATURES = ("log_ratio", "trend", "gap_to_best", "is_current", "is_safety", "is_replay")
GLOBAL_FEATURES = ("phase_progress", "seen_fraction")
TREND_WINDOW = 3


def slot_features(obs: Observation) -> tuple[np.ndarray, np.ndarray]:
    """(per-slot features [S, len(SLOT_FEATURES)], globals [len(GLOBAL_FEATURES)]), float32."""
    feats = np.zeros((obs.n_slots, len(SLOT_FEATURES)), dtype=np.float32)
    for k, (hist, ref, kind) in enumerate(zip(obs.history, obs.ref_loss, obs.kinds)):
        now = hist[-1]
        ref = max(ref, 1e-6)
        back = hist[-1 - TREND_WINDOW] if len(hist) > TREND_WINDOW else hist[0]
        feats[k] = (
            np.clip(np.log(max(now, 1e-6) / ref), -3.0, 3.0),
            np.clip((now - back) / ref, -3.0, 3.0),
            np.clip((now - min(hist)) / ref, 0.0, 3.0),
            kind == CURRENT, kind == SAFETY, kind == REPLAY,
        )
    glob = np.array([obs.phase_progress, obs.n_seen / (obs.n_seen + 1.0)], dtype=np.float32)
    return feats, glob
