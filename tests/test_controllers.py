import numpy as np
import pytest

from proxymix.controllers.base import CURRENT, REPLAY, SAFETY, Observation, apply_floor, check_weights
from proxymix.config import ConfigError
from proxymix.controllers.baselines import FixedRatio, StaticWeights, make_baseline


def random_obs(rng, n_replay=3, masked=(2,)):
    slots = [CURRENT, SAFETY] + [f"{REPLAY}:t{k}" for k in range(n_replay)]
    kinds = tuple(s.split(":")[0] for s in slots)
    mask = tuple(k not in masked for k in range(len(slots)))
    hist = tuple(tuple(rng.uniform(0.5, 3.0, size=rng.integers(1, 6))) for _ in slots)
    return Observation(tuple(slots), kinds, mask, hist, tuple(h[0] for h in hist), float(rng.random()), 3)


@pytest.mark.parametrize("name", ["no_replay", "fixed:0.1", "fixed:0.5", "uniform", "loss_prop", "loss_prop:0.2",
                                  "exp3", "doremi", "doremi:0.5", "doremi:0.3:0.1"])
def test_weights_are_probabilities_with_exact_zero_on_masked(name):
    rng = np.random.default_rng(0)
    ctrl = make_baseline(name)
    ctrl.reset()
    for _ in range(20):
        obs = random_obs(rng, n_replay=int(rng.integers(0, 5)), masked=(int(rng.integers(1, 4)),))
        w = check_weights(ctrl.act(obs), obs)
        assert np.all(w[~np.asarray(obs.mask)] == 0.0)
        assert w.sum() == pytest.approx(1.0, abs=1e-12)


def test_fixed_ratio_spreads_replay_uniformly():
    obs = random_obs(np.random.default_rng(1), n_replay=3, masked=(3,))
    w = FixedRatio(0.3).act(obs)
    # current 0.7; 0.3 over 3 available buffers (safety, t0, t2)
    np.testing.assert_allclose(w, [0.7, 0.1, 0.1, 0.0, 0.1])


def test_loss_prop_prefers_the_most_forgotten_buffer():
    obs = Observation((CURRENT, SAFETY, "replay:a"), (CURRENT, SAFETY, REPLAY), (True, True, True),
                      ((1.0,), (1.0, 1.05), (1.0, 3.0)), (1.0, 1.0, 1.0), 0.5, 2)
    w = make_baseline("loss_prop:0.4").act(obs)
    assert w[0] == pytest.approx(0.6) and w[2] > 5 * w[1]


def test_doremi_moves_replay_towards_the_buffer_with_excess_loss():
    ctrl = make_baseline("doremi:0.4")
    ctrl.reset()
    shares = []
    for k in range(1, 5):
        # buffer a: back at its reference loss; buffer b: 50% above it, at every decision
        obs = Observation((CURRENT, SAFETY, "replay:a", "replay:b"), (CURRENT, SAFETY, REPLAY, REPLAY),
                          (True,) * 4, ((2.0,),) + ((1.0,),) * 2 + ((1.5,),), (2.0, 1.0, 1.0, 1.0), k / 5, 3)
        w = check_weights(ctrl.act(obs), obs)
        assert w[0] == pytest.approx(0.6) and w[1] == pytest.approx(w[2])
        shares.append(w[3])
    # multiplicative weights accumulate: b's share grows decision after decision, never past 1 - smoothing
    assert all(b > a for a, b in zip(shares, shares[1:])) and shares[-1] < 0.4
    state = ctrl.state_dict()
    again = make_baseline("doremi:0.4")
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.act(obs), ctrl.act(obs))


def test_static_weights_replay_per_phase_means(tmp_path):
    (tmp_path / "mixture.csv").write_text(
        "step,phase,task,w:current,w:safety,w:replay:a\n"
        "150,1,a,1.0,0.0,0.0\n"
        "175,1,a,0.5,0.5,0.0\n"
        "550,2,b,0.6,0.1,0.3\n"
        "575,2,b,0.8,0.1,0.1\n")
    ctrl = StaticWeights(tmp_path)
    first = Observation((CURRENT, SAFETY), (CURRENT, SAFETY), (True, True), ((3.0,), (1.0,)), (3.0, 1.0), 0.0, 1)
    np.testing.assert_allclose(ctrl.act(first), [0.75, 0.25])
    second = Observation((CURRENT, SAFETY, "replay:a"), (CURRENT, SAFETY, REPLAY), (True, False, True),
                         ((3.0,), (1.0,), (1.0,)), (3.0, 1.0, 1.0), 0.5, 2)
    # the masked safety slot gets 0 and the rest is renormalised: (0.7, 0, 0.2) / 0.9
    np.testing.assert_allclose(ctrl.act(second), [0.7 / 0.9, 0.0, 0.2 / 0.9])
    other = Observation((CURRENT, SAFETY, "replay:z"), (CURRENT, SAFETY, REPLAY), (True,) * 3,
                        ((3.0,),) * 3, (3.0,) * 3, 0.5, 2)
    with pytest.raises(ConfigError, match="no recorded weight for slot.*replay:z.*same task sequence"):
        ctrl.act(other)
    with pytest.raises(ValueError, match="mixture.csv: not found"):
        make_baseline(f"static:{tmp_path / 'nowhere'}")


def test_floor_and_check_weights():
    obs = random_obs(np.random.default_rng(2), masked=())
    w = apply_floor(np.array([0.0, 0.5, 0.5, 0.0, 0.0]), obs, 0.4)
    np.testing.assert_allclose(w, [0.4, 0.3, 0.3, 0.0, 0.0])
    with pytest.raises(ValueError, match="masked"):
        check_weights(np.array([0.5, 0.5, 0, 0, 0]), random_obs(np.random.default_rng(3), masked=(1,)))


def test_unknown_controller_name():
    with pytest.raises(ValueError, match="unknown controller 'fixd:0.3'"):
        make_baseline("fixd:0.3")
    with pytest.raises(ValueError, match="bad controller"):
        make_baseline("fixed:2")
