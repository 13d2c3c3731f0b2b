from pathlib import Path

import pytest

from proxymix.config import ConfigError, RunConfig, dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.lr=1e-3", "data.sequence=[sort, max]", "seed=7"])
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.data.sequence == ["sort", "max"]
    assert cfg.seed == 7
    assert cfg.model.hidden == RunConfig().model.hidden


def test_unknown_key_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.decison_interval'.*did you mean 'decision_interval'"):
        load_config(None, ["train.decison_interval=5"])


def test_bad_type_and_value(tmp_path):
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(None, ["train.batch_size=abc"])
    with pytest.raises(ConfigError, match="must be divisible"):
        load_config(None, ["model.hidden=30", "model.n_heads=4"])
    with pytest.raises(ConfigError, match="train.sampler_streams"):
        load_config(None, ["train.sampler_streams=per_task"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: invalid YAML"):
        load_config(bad)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.lr=0.01", "model.family=gpt2"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
