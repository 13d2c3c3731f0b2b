"""The learned controller: a frozen `SlotPolicy` over leakage-free features, saved as safetensors + JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from proxymix.config import ConfigError
from proxymix.controllers.base import Observation
from proxymix.controllers.features import GLOBAL_FEATURES, SCHEMA_VERSION, SLOT_FEATURES, slot_features
from proxymix.io import write_json
from proxymix.rl.ppo import SlotPolicy, load_policy, save_policy


DEFAULT_CONTROLLER = Path(__file__).resolve().parent.parent / "assets" / "default_controller"


class LearnedController:
    """Acts with the policy mean (deterministic) when frozen, or samples when `generator` is given (training)."""

    def __init__(self, policy: SlotPolicy, name: str = "proxymix", meta: dict | None = None):
        self.policy = policy.eval()
        self.name = name
        self.meta = meta or {}

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def act(self, obs: Observation) -> np.ndarray:
        feats, glob = slot_features(obs)
        w, *_ = self.policy.act(torch.from_numpy(feats), torch.from_numpy(glob), torch.tensor(obs.mask),
                                deterministic=True)
        w = w.double().numpy()
        return w / w.sum()  # renormalise in float64 so the sum check is exact

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def save(self, out: str | Path, meta: dict) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_policy(self.policy, out / "policy.safetensors")
        doc = {"schema_version": SCHEMA_VERSION, "slot_features": list(SLOT_FEATURES),
               "global_features": list(GLOBAL_FEATURES),
               "architecture": {"type": "SlotPolicy", "hidden": self.policy.hidden}, **meta}
        write_json(out / "controller.json", doc)
        return out


def load_controller(path: str | Path) -> LearnedController:
    """Load a controller directory, refusing a feature-schema mismatch with a clear error."""
    path = Path(path)
    meta_path = path / "controller.json"
    if not meta_path.is_file() or not (path / "policy.safetensors").is_file():
        raise ConfigError(f"{path}: not a controller directory (needs controller.json and policy.safetensors)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{meta_path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
    if meta.get("schema_version") != SCHEMA_VERSION or meta.get("slot_features") != list(SLOT_FEATURES) \
            or meta.get("global_features") != list(GLOBAL_FEATURES):
        raise ConfigError(
            f"{meta_path}: feature schema {meta.get('schema_version')} {meta.get('slot_features')} does not match "
            f"this proxymix ({SCHEMA_VERSION} {list(SLOT_FEATURES)}); retrain the controller")
    hidden = int(meta.get("architecture", {}).get("hidden", 32))
    policy = load_policy(path / "policy.safetensors", len(SLOT_FEATURES), len(GLOBAL_FEATURES), hidden)
    return LearnedController(policy, name=meta.get("name", f"proxymix:{path.name}"), meta=meta)
