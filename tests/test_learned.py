"""The learned controller: leakage-free features, masking, save/load, the shipped default, RL plumbing."""

import json

import numpy as np
import pytest
import torch

from proxymix.config import ConfigError
from proxymix.controllers.base import CURRENT, REPLAY, SAFETY, Observation, check_weights
from proxymix.controllers.features import GLOBAL_FEATURES, SLOT_FEATURES, slot_features
from proxymix.controllers.learned import DEFAULT_CONTROLLER, LearnedController, load_controller
from proxymix.data.suite import SAFETY as SAFETY_TASK
from proxymix.engine import ContinualRun, run_continual
from proxymix.rl.ppo import SlotPolicy
from proxymix.rl.trainer import sample_episodes


class Poison:
    """Stands in for a future task's data: any access raises."""

    def __getattr__(self, name):
        raise AssertionError(f"future task data accessed ({name})")

    def __getitem__(self, key):
        raise AssertionError(f"future task data accessed [{key!r}]")


def test_features_never_read_future_tasks(tiny_cfg, monkeypatch):
    """While observations are built and the controller acts, every not-yet-seen task is poisoned."""
    original = ContinualRun._observe

    def guarded(self, *args, **kwargs):
        current = self.slot_task(CURRENT)
        seen = set(self.sequence[: self.sequence.index(current) + 1]) | {SAFETY_TASK}
        saved_enc, saved_tasks = dict(self.enc), dict(self.tasks)
        for name in self.sequence:
            if name not in seen:
                self.enc[name], self.tasks[name] = Poison(), Poison()
        try:
            return original(self, *args, **kwargs)
        finally:
            self.enc.update(saved_enc)
            self.tasks.update(saved_tasks)

    monkeypatch.setattr(ContinualRun, "_observe", guarded)
    policy = SlotPolicy(len(SLOT_FEATURES), len(GLOBAL_FEATURES), hidden=8)
    res, _ = run_continual(tiny_cfg(), LearnedController(policy))
    assert len(res.mixture) == 6  # every decision went through the poisoned path


def _obs(mask):
    n = len(mask)
    kinds = (CURRENT, SAFETY) + (REPLAY,) * (n - 2)
    hist = tuple((1.0, 1.0 + 0.1 * k) for k in range(n))
    return Observation(tuple(f"s{k}" for k in range(n)), kinds, tuple(mask), hist, tuple(h[0] for h in hist), 0.3, 2)


def test_learned_masked_slots_get_exactly_zero():
    torch.manual_seed(0)
    ctrl = LearnedController(SlotPolicy(len(SLOT_FEATURES), len(GLOBAL_FEATURES), hidden=8))
    for mask in [(True, False, True, True), (True, True, False), (True, False), (True,)]:
        obs = _obs(mask)
        w = check_weights(ctrl.act(obs), obs)
        assert np.all(w[~np.asarray(mask)] == 0.0)


def test_features_are_scale_free():
    """Multiplying every loss by a constant (a bigger model's different loss level) leaves features unchanged."""
    obs = _obs((True, True, True))
    scaled = Observation(obs.slots, obs.kinds, obs.mask, tuple(tuple(3.7 * v for v in h) for h in obs.history),
                         tuple(3.7 * r for r in obs.ref_loss), obs.phase_progress, obs.n_seen)
    for a, b in zip(slot_features(obs), slot_features(scaled)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_save_load_round_trip_identical_actions(tmp_path):
    torch.manual_seed(1)
    ctrl = LearnedController(SlotPolicy(len(SLOT_FEATURES), len(GLOBAL_FEATURES), hidden=8))
    ctrl.save(tmp_path / "c", {"name": "t"})
    loaded = load_controller(tmp_path / "c")
    for mask in [(True, True, True, False), (True, False)]:
        np.testing.assert_array_equal(ctrl.act(_obs(mask)), loaded.act(_obs(mask)))


def test_schema_mismatch_is_refused(tmp_path):
    ctrl = LearnedController(SlotPolicy(len(SLOT_FEATURES), len(GLOBAL_FEATURES), hidden=8))
    ctrl.save(tmp_path / "c", {"name": "t"})
    meta = json.loads((tmp_path / "c" / "controller.json").read_text())
    meta["schema_version"] = 0
    (tmp_path / "c" / "controller.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="feature schema"):
        load_controller(tmp_path / "c")
    with pytest.raises(ConfigError, match="not a controller directory"):
        load_controller(tmp_path)


def test_default_controller_loads_and_acts():
    ctrl = load_controller(DEFAULT_CONTROLLER)
    assert ctrl.meta["kind"] == "proxy_rl" and ctrl.meta["command"].startswith("proxymix train-controller")
    assert ctrl.meta["cost"]["episodes"] > 0
    obs = _obs((True, True, True, True))
    w = check_weights(ctrl.act(obs), obs)
    assert w.shape == (4,)


def test_episodes_never_use_heldout_domains_or_eval_sequences(tiny_cfg):
    from proxymix.data.suite import SEQUENCES

    cfg = tiny_cfg("rl.episodes_per_update=16")
    eps = [ep for u in range(5) for ep in sample_episodes(cfg, u)]
    assert all(not set(ep["sequence"]) & set(cfg.rl.heldout_domains) for ep in eps)
    assert all(tuple(ep["sequence"]) != tuple(s[: len(ep["sequence"])]) for ep in eps for s in SEQUENCES.values())
    assert len({ep["seed"] for ep in eps}) == len(eps) and min(ep["seed"] for ep in eps) >= 1000
    assert sample_episodes(cfg, 3) == sample_episodes(cfg, 3)


def test_grouped_episodes_share_scenario_not_noise(tiny_cfg):
    eps = sample_episodes(tiny_cfg("rl.episodes_per_update=6", "rl.group_size=3"), 2)
    assert [ep["group"] for ep in eps] == [0, 0, 0, 1, 1, 1]
    for g in (eps[:3], eps[3:]):
        assert len({(tuple(ep["sequence"]), ep["seed"]) for ep in g}) == 1
        assert len({ep["noise_seed"] for ep in g}) == 3
    assert eps[0]["seed"] != eps[3]["seed"]
    with pytest.raises(ConfigError, match="rl.episodes_per_update .5. must be a multiple of rl.group_size .2."):
        tiny_cfg("rl.episodes_per_update=5", "rl.group_size=2")


def test_grouped_training_records_where_the_score_varies(tiny_cfg, tmp_path):
    from proxymix.rl.trainer import train_controller

    cfg = tiny_cfg("rl.updates=1", "rl.episodes_per_update=4", "rl.group_size=2", "rl.tasks_per_episode=1",
                   "rl.pool=serial", "rl.train_domains=[max]", "rl.minibatch_size=4", "rl.init_log_std=1.0",
                   "rl.lambda_loss=1")
    row = train_controller(cfg, tmp_path / "c", progress=False).meta["history"][0]
    # two scenarios of two episodes: both spreads are measured (noise seeds differ, so members differ)
    assert row["terminal_std_within"] is not None and row["terminal_std_between"] is not None
    assert row["terminal_std_within"] > 0.0 and row["terminal_std_between"] > 0.0
    assert np.isfinite(row["rl/pg_loss"])


def test_short_train_controller_improves_its_training_reward(tiny_cfg, tmp_path):
    """PPO on tiny proxy runs: the reward is the safety task's val-loss change over a one-domain episode, which
    more safety replay improves; common random numbers (one episode seed) leave the policy's choices as the
    main source of variance. Deterministic for this seed on CPU."""
    from proxymix.rl.trainer import train_controller

    cfg = tiny_cfg(
        "train.lr=0.01", "train.steps_per_task=20", "train.safety_steps=20", "train.decision_interval=5",
        "rl.updates=8", "rl.episodes_per_update=4", "rl.tasks_per_episode=1", "rl.pool=serial",
        "rl.train_domains=[max]", "rl.episode_seeds=1", "rl.minibatch_size=8", "rl.lambda_acc=0", "rl.lambda_f=0",
        "rl.lambda_s=0", "rl.lambda_loss=1", "rl.shaping_coef=0", "rl.lr=0.03", "rl.init_log_std=0.0")
    ctrl = train_controller(cfg, tmp_path / "c", progress=False)
    hist = ctrl.meta["history"]
    assert len(hist) == 8
    assert np.mean([h["return_mean"] for h in hist[-2:]]) > hist[0]["return_mean"] + 0.02
    assert ctrl.meta["cost"]["episodes"] == 32 and ctrl.meta["cost"]["rollout_flops"] > 0
    for name in ("policy.safetensors", "controller.json", "learning_curve.png", "ledger.csv", "config.yaml"):
        assert (tmp_path / "c" / name).is_file()
    assert load_controller(tmp_path / "c").act(_obs((True, True))).sum() == pytest.approx(1.0)


def test_train_controller_resumes_from_last_update(tiny_cfg, tmp_path):
    from proxymix.rl.trainer import train_controller

    common = ("rl.episodes_per_update=2", "rl.tasks_per_episode=1", "rl.pool=serial", "rl.train_domains=[max]",
              "rl.minibatch_size=4")
    full = train_controller(tiny_cfg("rl.updates=2", *common), tmp_path / "a", progress=False)
    train_controller(tiny_cfg("rl.updates=1", *common), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="different config"):
        train_controller(tiny_cfg("rl.updates=2", *common, "rl.lr=0.5"), tmp_path / "b", progress=False)
    # a checkpoint written before a config key existed resumes with that key at its default
    state_path = tmp_path / "b" / "checkpoint" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    del state["config"]["train"]["sampler_streams"]
    state_path.write_text(json.dumps(state))
    # the same config asking for more updates resumes after the last completed one (on any number of workers)
    resumed = train_controller(tiny_cfg("rl.updates=2", "rl.workers=4", *common), tmp_path / "b", progress=False)
    assert [h["return_mean"] for h in resumed.meta["history"]] == [h["return_mean"] for h in full.meta["history"]]
    obs = _obs((True, True))
    np.testing.assert_array_equal(resumed.act(obs), full.act(obs))


def test_cost_ratio_recorded_in_both_controllers(tmp_path):
    from proxymix.rl.trainer import ledger_summary, record_cost_ratio

    def ledger(flops, n):
        return [{"kind": "rollout", "update": 0, "train_flops": flops, "eval_flops": 0.0, "wall_s": 2.0}] * n + \
               [{"kind": "update", "update": 0, "train_flops": 0.0, "eval_flops": 0.0, "wall_s": 0.1}]

    for name, flops, n in (("proxy", 1e9, 8), ("oracle", 2e10, 2)):
        ctrl = LearnedController(SlotPolicy(len(SLOT_FEATURES), len(GLOBAL_FEATURES), hidden=8))
        ctrl.save(tmp_path / name, {"name": name, "cost": ledger_summary(ledger(flops, n))})
    r = record_cost_ratio(tmp_path / "proxy", tmp_path / "oracle")
    assert r["per_episode_flops_ratio"] == pytest.approx(20.0)
    assert r["total_flops_ratio"] == pytest.approx(2e10 * 2 / (1e9 * 8))
    assert load_controller(tmp_path / "proxy").meta["cost_ratio_oracle_vs_proxy"] == r
