"""Replay controllers: the protocol, baselines, features and the learned policy."""

from __future__ import annotations

from pathlib import Path


def make_controller(name: str):
    """A baseline by name, a trained controller from its directory (`default` = the shipped one), or None for
    the `multitask` joint-training reference."""
    from proxymix.config import ConfigError
    from proxymix.controllers.baselines import make_baseline
    from proxymix.controllers.learned import DEFAULT_CONTROLLER, load_controller

    if name == "multitask":
        return None
    if name == "default":
        return load_controller(DEFAULT_CONTROLLER)
    if Path(name).is_dir():
        return load_controller(name)
    try:
        return make_baseline(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
