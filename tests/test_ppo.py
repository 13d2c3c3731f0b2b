"""Tests for proxymix.rl.ppo: pure math with hand-computed values, invariances, and a tiny bandit sanity check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from proxymix.rl.ppo import (
    RolloutBuffer,
    SlotPolicy,
    compute_gae,
    group_advantages,
    load_policy,
    masked_softmax,
    ppo_loss,
    ppo_update,
    save_policy,
)

F, G = 4, 3


@pytest.fixture
def policy() -> SlotPolicy:
    torch.manual_seed(0)
    return SlotPolicy(F, G, hidden=16)


def _obs(s: int, seed: int = 0, masked: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(s, dtype=torch.bool)
    mask[list(masked)] = False
    return torch.randn(s, F, generator=g), torch.randn(G, generator=g), mask


# --- masked softmax --------------------------------------------------------------------------------------------


def test_masked_softmax_exact_zeros_and_sums_to_one() -> None:
    # huge and infinite logits on masked entries must not leak any mass
    logits = torch.tensor([[1.0, 1e9, -2.0, float("inf")], [0.3, 0.1, 5.0, 2.0]])
    mask = torch.tensor([[True, False, True, False], [False, True, True, True]])
    p = masked_softmax(logits, mask)
    assert torch.all(p[~mask] == 0.0)
    torch.testing.assert_close(p.sum(-1), torch.ones(2))
    # on the available entries it is the ordinary softmax
    torch.testing.assert_close(p[0, [0, 2]], torch.softmax(torch.tensor([1.0, -2.0]), -1))


# --- policy ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [1, 3, 7])
def test_policy_any_number_of_slots(policy: SlotPolicy, s: int) -> None:
    masked = (0,) if s > 1 else ()
    feats, glob, mask = _obs(s, seed=s, masked=masked)
    w, z, logp, v = policy.act(feats, glob, mask, generator=torch.Generator().manual_seed(1), deterministic=False)
    assert w.shape == z.shape == (s,) and logp.shape == v.shape == ()
    assert torch.all(w[~mask] == 0.0) and torch.all(z[~mask] == 0.0)
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    # batched forward gives the same as unbatched
    mu_b, v_b = policy(feats[None], glob[None], mask[None])
    mu, v1 = policy(feats, glob, mask)
    torch.testing.assert_close(mu_b[0], mu)
    torch.testing.assert_close(v_b[0], v1)


def test_policy_permutation_equivariant(policy: SlotPolicy) -> None:
    feats, glob, mask = _obs(6, seed=3, masked=(1, 4))
    perm = torch.tensor([5, 2, 0, 4, 1, 3])
    w, _, _, v = policy.act(feats, glob, mask, deterministic=True)
    w_p, _, _, v_p = policy.act(feats[perm], glob, mask[perm], deterministic=True)
    torch.testing.assert_close(w_p, w[perm])
    torch.testing.assert_close(v_p, v)  # the value is permutation-invariant
    assert not torch.allclose(w[mask], w[mask][0].expand(4))  # non-trivial: slots do get different weights


def test_masked_slot_features_are_ignored(policy: SlotPolicy) -> None:
    feats, glob, mask = _obs(4, seed=5, masked=(2,))
    junk = feats.clone()
    junk[2] = 1e6
    w, _, _, v = policy.act(feats, glob, mask, deterministic=True)
    w_j, _, _, v_j = policy.act(junk, glob, mask, deterministic=True)
    torch.testing.assert_close(w_j, w)
    torch.testing.assert_close(v_j, v)


def test_deterministic_act_is_softmax_of_mu(policy: SlotPolicy) -> None:
    feats, glob, mask = _obs(5, seed=7, masked=(3,))
    mu, value = policy(feats, glob, mask)
    w, z, _, v = policy.act(feats, glob, mask, deterministic=True)
    torch.testing.assert_close(z, mu.detach())
    torch.testing.assert_close(w, masked_softmax(mu.detach(), mask))
    torch.testing.assert_close(v, value.detach())


def test_log_prob_and_entropy_match_torch_normal(policy: SlotPolicy) -> None:
    feats, glob, mask = _obs(5, seed=11, masked=(0, 2))
    _, z, logp, _ = policy.act(feats, glob, mask, generator=torch.Generator().manual_seed(2), deterministic=False)
    mu, _ = policy(feats, glob, mask)
    dist = torch.distributions.Normal(mu.detach()[mask], policy.log_std.detach().exp())
    torch.testing.assert_close(logp, dist.log_prob(z[mask]).sum())
    # evaluate (batched, with gradients) agrees with act and with the Normal entropy over the 3 available slots
    logp_e, ent_e, _ = policy.evaluate(feats[None], glob[None], mask[None], z[None])
    torch.testing.assert_close(logp_e.detach(), logp[None])
    torch.testing.assert_close(ent_e.detach(), dist.entropy().sum()[None])
    assert logp_e.requires_grad


def test_sampling_is_reproducible_with_generator(policy: SlotPolicy) -> None:
    feats, glob, mask = _obs(4, seed=13)
    a = policy.act(feats, glob, mask, generator=torch.Generator().manual_seed(9), deterministic=False)[1]
    b = policy.act(feats, glob, mask, generator=torch.Generator().manual_seed(9), deterministic=False)[1]
    c = policy.act(feats, glob, mask, generator=torch.Generator().manual_seed(10), deterministic=False)[1]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


# --- floor -----------------------------------------------------------------------------------------------------


def test_gae_hand_computed_three_steps() -> None:
    # gamma = 0.9, lam = 0.8 (gamma * lam = 0.72), V = [0.5, 1.0, 1.5], last_value = 2.0, r = [1, 2, 3]
    # delta_2 = 3 + 0.9 * 2.0 - 1.5 = 3.3
    # delta_1 = 2 + 0.9 * 1.5 - 1.0 = 2.35
    # delta_0 = 1 + 0.9 * 1.0 - 0.5 = 1.4
    # A_2 = 3.3
    # A_1 = 2.35 + 0.72 * 3.3   = 4.726
    # A_0 = 1.4  + 0.72 * 4.726 = 4.80272
    # returns = A + V = [5.30272, 5.726, 4.8]
    adv, ret = compute_gae(
        np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 1.5]), np.array([False, False, False]), 2.0, 0.9, 0.8
    )
    torch.testing.assert_close(adv, torch.tensor([4.80272, 4.726, 3.3]))
    torch.testing.assert_close(ret, torch.tensor([5.30272, 5.726, 4.8]))


def test_gae_done_stops_bootstrap() -> None:
    # same numbers, but the episode ends at t = 1: no V(s_2) in delta_1 and no A_2 in A_1
    # delta_1 = 2 - 1.0 = 1.0 -> A_1 = 1.0;  A_2 = 3.3 (a new episode);  A_0 = 1.4 + 0.72 * 1.0 = 2.12
    # returns = [2.62, 2.0, 4.8]
    adv, ret = compute_gae(
        torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 1.5]), torch.tensor([False, True, False]), 2.0, 0.9, 0.8
    )
    torch.testing.assert_close(adv, torch.tensor([2.12, 1.0, 3.3]))
    torch.testing.assert_close(ret, torch.tensor([2.62, 2.0, 4.8]))
    # a done on the last step ignores last_value entirely
    a1, _ = compute_gae([1.0], [0.0], [True], 123.0, 0.9, 0.8)
    torch.testing.assert_close(a1, torch.tensor([1.0]))


def test_gae_lambda_one_is_monte_carlo_return() -> None:
    # lam = 1, gamma = 0.5, episode ends at the last step: returns are discounted sums 1 + 0.5*2 + 0.25*4 = 3, ...
    _, ret = compute_gae([1.0, 2.0, 4.0], [0.3, -1.0, 7.0], [False, False, True], 0.0, 0.5, 1.0)
    torch.testing.assert_close(ret, torch.tensor([3.0, 4.0, 4.0]))


# --- PPO loss --------------------------------------------------------------------------------------------------


def test_group_advantages_are_relative_to_each_group() -> None:
    adv = group_advantages([1.0, 3.0, 10.0, 10.0, 0.0, 4.0], [0, 0, 1, 1, 2, 2], [2, 1, 1, 1, 1, 3])
    # group 0: returns 1, 3 -> -1, +1 (population std 1); group 1: equal returns -> 0; group 2: 0, 4 -> -1, +1
    expected = [-1.0, -1.0, 1.0, 0.0, 0.0, -1.0, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(adv.numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="group 7 has one episode"):
        group_advantages([1.0, 2.0, 3.0], [0, 0, 7], [1, 1, 1])


def test_ppo_loss_clipped_gradient_is_zero() -> None:
    eps = 0.2
    old = torch.zeros(4)
    # ratios e^0.5 ~ 1.65 (outside), e^0.5, e^0.05 ~ 1.05 (inside), e^0.5
    new = torch.tensor([0.5, 0.5, 0.05, 0.5], requires_grad=True)
    # after normalization advantages 0 and 2 stay positive, 1 and 3 become negative
    adv = torch.tensor([2.0, -1.0, 3.0, -2.0])
    zeros = torch.zeros(4)
    loss, stats = ppo_loss(new, old, adv, zeros, zeros, zeros, clip_coef=eps, vf_coef=0.0, ent_coef=0.0)
    torch.testing.assert_close(loss, stats["pg_loss"])  # vf_coef = ent_coef = 0: loss is the policy loss
    loss.backward()
    g = new.grad
    assert g[0] == 0.0  # positive advantage, ratio above 1 + eps: clipped, no gradient
    assert g[2] != 0.0  # positive advantage, ratio inside the trust region
    assert g[1] != 0.0 and g[3] != 0.0  # negative advantage, ratio above 1 + eps: the pessimistic term is unclipped
    torch.testing.assert_close(stats["clipfrac"], torch.tensor(0.75))
    assert stats["approx_kl"] > 0


def test_ppo_loss_single_element_and_value_entropy_terms() -> None:
    # one element: no normalization; ratio 1 -> pg_loss = -A = -3; v_loss = 0.5 * (1 - 3)^2 = 2; H = 0.5
    new = torch.zeros(1, requires_grad=True)
    loss, stats = ppo_loss(
        new, torch.zeros(1), torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([0.5]),
        clip_coef=0.2, vf_coef=0.5, ent_coef=0.1,
    )
    torch.testing.assert_close(stats["pg_loss"], torch.tensor(-3.0))
    torch.testing.assert_close(stats["v_loss"], torch.tensor(2.0))
    torch.testing.assert_close(loss, torch.tensor(-3.0 + 0.5 * 2.0 - 0.1 * 0.5))


# --- rollout buffer --------------------------------------------------------------------------------------------


def test_buffer_pads_variable_slots_without_changing_evaluation(policy: SlotPolicy) -> None:
    buf = RolloutBuffer()
    obs = [_obs(2, seed=20), _obs(4, seed=21, masked=(1,)), _obs(3, seed=22)]
    for t, (feats, glob, mask) in enumerate(obs):
        _, z, logp, v = policy.act(feats, glob, mask, generator=torch.Generator().manual_seed(t))
        buf.add(feats, glob, mask, z, logp, v, reward=float(t), done=t == 2)
    assert len(buf) == 3
    torch.testing.assert_close(buf.rewards, torch.tensor([0.0, 1.0, 2.0]))
    assert buf.dones.tolist() == [False, False, True]
    batches = list(buf.batches(minibatch_size=8, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == 1
    mb = batches[0]
    assert mb["feats"].shape == (3, 4, F) and mb["mask"].shape == (3, 4)
    assert sorted(mb["index"].tolist()) == [0, 1, 2]
    logp_new, _, v_new = policy.evaluate(mb["feats"], mb["glob"], mb["mask"], mb["z"])
    for row, i in enumerate(mb["index"].tolist()):
        s = obs[i][2].shape[0]
        assert not mb["mask"][row, s:].any()  # padded slots are masked out
        # padding does not change the log-prob or the value stored at collection time
        torch.testing.assert_close(logp_new[row].detach(), mb["log_prob"][row])
        torch.testing.assert_close(v_new[row].detach(), mb["value"][row])
    # every step appears exactly once across minibatches
    idx = torch.cat([b["index"] for b in buf.batches(2, torch.Generator().manual_seed(1))])
    assert sorted(idx.tolist()) == [0, 1, 2]
    buf.clear()
    assert len(buf) == 0


# --- end to end ------------------------------------------------------------------------------------------------


def test_ppo_bandit_learns_to_favour_rewarded_slot() -> None:
    # 3 always-available slots, one-step episodes, reward = weight put on slot 2. The policy is permutation-
    # equivariant, so slots must be told apart by their features: one-hot slot ids.
    torch.manual_seed(0)
    pol = SlotPolicy(3, 1, hidden=16)
    opt = torch.optim.Adam(pol.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    feats, glob, mask = torch.eye(3), torch.zeros(1), torch.ones(3, dtype=torch.bool)
    w_start = pol.act(feats, glob, mask, deterministic=True)[0][2].item()
    buf = RolloutBuffer()
    for _ in range(6):  # ~0.3 s on 2 CPU cores; reaches w[2] ~ 0.94 from 1/3
        buf.clear()
        for _ in range(32):
            w, z, logp, v = pol.act(feats, glob, mask, generator=gen)
            buf.add(feats, glob, mask, z, logp, v, reward=w[2].item(), done=True)
        adv, ret = compute_gae(buf.rewards, buf.values, buf.dones, 0.0, gamma=0.99, lam=0.95)
        stats = ppo_update(pol, opt, buf, adv, ret, epochs=4, minibatch_size=16, clip_coef=0.2, vf_coef=0.5,
                           ent_coef=0.0, max_grad_norm=0.5, generator=gen)
    assert set(stats) == {"pg_loss", "v_loss", "entropy", "approx_kl", "clipfrac"}
    assert all(math.isfinite(x) for x in stats.values())
    w_end = pol.act(feats, glob, mask, deterministic=True)[0]
    assert abs(w_start - 1 / 3) < 0.05  # near-uniform start (small actor-head init)
    assert w_end[2].item() > w_start + 0.2
    assert w_end.argmax().item() == 2


def test_save_load_round_trip(policy: SlotPolicy, tmp_path) -> None:
    with torch.no_grad():
        policy.log_std.fill_(-1.3)  # non-default, so the round trip must restore it
    path = tmp_path / "controller.safetensors"
    save_policy(policy, path)
    loaded = load_policy(path, F, G, hidden=16)
    for s, masked in [(3, ()), (6, (2, 5))]:
        feats, glob, mask = _obs(s, seed=30 + s, masked=masked)
        a = policy.act(feats, glob, mask, deterministic=True)
        b = loaded.act(feats, glob, mask, deterministic=True)
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert loaded.log_std.item() == pytest.approx(-1.3)
    with pytest.raises(ValueError):
        load_policy(path, F, G, hidden=8)
