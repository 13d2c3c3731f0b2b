"""PPO for the replay controller: policy, rollout storage, advantages and update in one file.

CleanRL style (one file, read top to bottom) but importable: the math (masked softmax, GAE, clipped loss) lives in
module-level functions that the tests import.

The action is a mixture over ``S`` slots (current task, one replay buffer per earlier task, the safety buffer). Some
slots are masked (not yet seen, or empty) and must get exactly zero weight; ``S`` varies between episodes. The
policy is therefore a shared per-slot MLP (permutation-equivariant, any ``S``) and the action distribution is
logistic-normal: Gaussian logits ``z ~ N(mu, std^2)`` on the available slots, mixture ``w = masked_softmax(z)``.
PPO works on ``z`` (whose density is tractable), never on ``w``.

Shapes: ``feats`` [..., S, F] float, ``glob`` [..., G] float, ``mask`` [..., S] bool (True = available, at least
one True per row). The leading ``...`` is empty for a single observation or ``B`` for a batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "SlotPolicy",
    "masked_softmax",
    "compute_gae",
    "group_advantages",
    "ppo_loss",
    "RolloutBuffer",
    "ppo_update",
    "save_policy",
    "load_policy",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _layer_init(layer: nn.Linear, std: float = math.sqrt(2.0), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weight init, constant bias (as in CleanRL's ``layer_init``)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def _check_obs(feats: torch.Tensor, glob: torch.Tensor, mask: torch.Tensor) -> None:
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    if feats.shape[:-1] != mask.shape:
        raise ValueError(f"feats {tuple(feats.shape)} and mask {tuple(mask.shape)} disagree on [..., S]")
    if glob.shape[:-1] != feats.shape[:-2]:
        raise ValueError(f"glob {tuple(glob.shape)} and feats {tuple(feats.shape)} disagree on the batch dims")


# ---------------------------------------------------------------------------------------------------------------
# 1. Policy
# ---------------------------------------------------------------------------------------------------------------


class SlotPolicy(nn.Module):
    """Permutation-equivariant actor-critic over a variable number of masked slots.

    A shared per-slot MLP reads ``[slot features, globals]`` and gives one hidden vector per slot; a linear head
    turns it into one logit ``mu_i`` per slot. The critic mean-pools the hidden vectors over the available slots,
    concatenates the globals and maps to a scalar value. A single learned ``log_std`` sets the exploration noise of
    the logistic-normal action distribution.

    Args:
        n_slot_features: Number of per-slot features ``F``.
        n_global_features: Number of global features ``G``.
        hidden: Width of the per-slot MLP and of the value MLP.
        init_log_std: Initial value of the learned log standard deviation of the logits.
    """

    def __init__(
        self, n_slot_features: int, n_global_features: int, hidden: int = 32, init_log_std: float = -0.5
    ) -> None:
        super().__init__()
        if n_slot_features < 1 or n_global_features < 0 or hidden < 1:
            raise ValueError(
                f"need n_slot_features >= 1, n_global_features >= 0, hidden >= 1; got "
                f"{n_slot_features}, {n_global_features}, {hidden}"
            )
        self.n_slot_features = n_slot_features
        self.n_global_features = n_global_features
        self.hidden = hidden
        self.slot_encoder = nn.Sequential(
            _layer_init(nn.Linear(n_slot_features + n_global_features, hidden)),
            nn.Tanh(),
            _layer_init(nn.Linear(hidden, hidden)),
            nn.Tanh(),
        )
        # small final std: the initial policy is close to uniform over available slots (CleanRL actor init)
        self.logit_head = _layer_init(nn.Linear(hidden, 1), std=0.01)
        self.value_head = nn.Sequential(
            _layer_init(nn.Linear(hidden + n_global_features, hidden)),
            nn.Tanh(),
            _layer_init(nn.Linear(hidden, 1), std=1.0),
        )
        self.log_std = nn.Parameter(torch.tensor(float(init_log_std)))

    def forward(
        self, feats: torch.Tensor, glob: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logit means and state value.

        Args:
            feats: Per-slot features, [S, F] or [B, S, F].
            glob: Global features, [G] or [B, G].
            mask: Available slots, bool [S] or [B, S].

        Returns:
            ``(mu, value)``: ``mu`` [..., S] with masked positions set to 0 (they are ignored everywhere),
            ``value`` [...].
        """
        _check_obs(feats, glob, mask)
        m = mask.unsqueeze(-1)
        # zero masked features so that whatever sits there (padding, stale values) cannot leak into any output
        feats = feats.masked_fill(~m, 0.0)
        glob_b = glob.unsqueeze(-2).expand(*feats.shape[:-1], glob.shape[-1])
        h = self.slot_encoder(torch.cat([feats, glob_b], dim=-1))  # [..., S, H]
        mu = self.logit_head(h).squeeze(-1).masked_fill(~mask, 0.0)
        n_avail = mask.sum(-1, keepdim=True).clamp_min(1).to(h.dtype)
        pooled = h.masked_fill(~m, 0.0).sum(-2) / n_avail  # mean over available slots only
        value = self.value_head(torch.cat([pooled, glob], dim=-1)).squeeze(-1)
        return mu, value

    def _log_prob(self, mu: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # log N(z; mu, std^2) = -(z - mu)^2 / (2 std^2) - log std - log sqrt(2 pi), summed over available slots
        log_std = self.log_std
        per_slot = -0.5 * ((z - mu) * torch.exp(-log_std)) ** 2 - log_std - _LOG_SQRT_2PI
        return per_slot.masked_fill(~mask, 0.0).sum(-1)

    def _entropy(self, mask: torch.Tensor) -> torch.Tensor:
        # entropy of N(mu, std^2) = 1/2 + log sqrt(2 pi) + log std, per available slot
        per_slot = 0.5 + _LOG_SQRT_2PI + self.log_std
        return per_slot * mask.sum(-1).to(self.log_std.dtype)

    @torch.no_grad()
    def act(
        self,
        feats: torch.Tensor,
        glob: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample a mixture (no gradient; used to collect rollouts and to run the frozen controller).

        Args:
            feats: Per-slot features, [S, F] or [B, S, F].
            glob: Global features, [G] or [B, G].
            mask: Available slots, bool [S] or [B, S].
            generator: Source of the exploration noise; ``None`` uses torch's global RNG.
            deterministic: If True, ``z = mu`` (no noise).

        Returns:
            ``(weights, z, log_prob, value)``: ``weights = masked_softmax(z, mask)`` [..., S] (exact zeros on masked
            slots), the sampled logits ``z`` [..., S] (0 on masked slots), their log density [...] summed over
            available slots, and the value estimate [...].
        """
        mu, value = self(feats, glob, mask)
        if deterministic:
            z = mu
        else:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = (mu + torch.exp(self.log_std) * eps).masked_fill(~mask, 0.0)
        return masked_softmax(z, mask), z, self._log_prob(mu, z, mask), value

    def evaluate(
        self, feats: torch.Tensor, glob: torch.Tensor, mask: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log density of stored actions, entropy and value, with gradients (for the PPO update).

        Args:
            feats: Per-slot features, [B, S, F] (or unbatched).
            glob: Global features, [B, G].
            mask: Available slots, bool [B, S]; padded slots are False.
            z: Stored sampled logits, [B, S]; values at masked positions are ignored.

        Returns:
            ``(log_prob, entropy, value)``, each [B]. The entropy is that of the Gaussian over the logits of the
            available slots.
        """
        mu, value = self(feats, glob, mask)
        return self._log_prob(mu, z, mask), self._entropy(mask), value


# ---------------------------------------------------------------------------------------------------------------
# 2. Masked softmax
# ---------------------------------------------------------------------------------------------------------------


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the available entries of the last dim; masked entries are exactly 0.0.

    Args:
        logits: [..., S].
        mask: bool [..., S], True = available. Each row needs at least one True (an all-False row returns zeros).

    Returns:
        Probabilities [..., S] summing to 1 over the available entries.
    """
    probs = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    # where, not multiply: an all-masked row is NaN after softmax and NaN * 0 is still NaN
    return torch.where(mask, probs, torch.zeros_like(probs))


# ---------------------------------------------------------------------------------------------------------------
# 3. Advantage estimation
# ---------------------------------------------------------------------------------------------------------------


def _to_f64(x: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def compute_gae(
    rewards: torch.Tensor | np.ndarray | Sequence[float],
    values: torch.Tensor | np.ndarray | Sequence[float],
    dones: torch.Tensor | np.ndarray | Sequence[bool],
    last_value: float | torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, arXiv 1506.02438) over a flattened rollout.

    Args:
        rewards: [T] reward of step t.
        values: [T] value estimate V(s_t).
        dones: [T] True if the episode ended at step t (no bootstrapping across it).
        last_value: V(s_T), the value of the state after the last step (ignored if ``dones[T-1]``).
        gamma: Discount factor.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, float tensors [T]; ``returns = advantages + values`` (the value targets).
    """
    r, v, d = (_to_f64(x) for x in (rewards, values, dones))
    if not (r.ndim == v.ndim == d.ndim == 1 and r.shape == v.shape == d.shape):
        raise ValueError(f"rewards, values, dones must be 1-D of equal length: {r.shape}, {v.shape}, {d.shape}")
    adv = np.zeros_like(r)
    next_value = float(last_value)
    next_adv = 0.0
    for t in reversed(range(r.shape[0])):
        not_done = 1.0 - d[t]
        # delta_t = r_t + gamma * V(s_{t+1}) * (1 - done_t) - V(s_t)
        # A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1}
        delta = r[t] + gamma * next_value * not_done - v[t]
        next_adv = delta + gamma * lam * not_done * next_adv
        adv[t] = next_adv
        next_value = v[t]
    dtype = torch.get_default_dtype()
    return torch.from_numpy(adv).to(dtype), torch.from_numpy(adv + v).to(dtype)


def group_advantages(
    returns: Sequence[float], groups: Sequence[int], lengths: Sequence[int], eps: float = 1e-8
) -> torch.Tensor:
    """Group-relative advantages (GRPO, Shao et al. 2024, arXiv 2402.03300), one value per episode step.

    Episodes of one group share their scenario (task order, seed); each episode's advantage is
    ``(R_e - mean_g R) / (std_g R + eps)`` over its group, given to every step of the episode. A group whose
    returns are all equal contributes zero advantage.

    Args:
        returns: [E] episode returns.
        groups: [E] group id of each episode.
        lengths: [E] number of steps of each episode (the rollout is the episodes concatenated in this order).
        eps: Added to the group std.

    Returns:
        Float tensor [sum(lengths)].
    """
    r, g = np.asarray(returns, dtype=np.float64), np.asarray(groups)
    if not (r.shape == g.shape == (len(lengths),)):
        raise ValueError(f"returns, groups, lengths must have equal length: {r.shape}, {g.shape}, {len(lengths)}")
    adv = np.zeros_like(r)
    for gid in np.unique(g):
        members = g == gid
        if members.sum() < 2:
            raise ValueError(f"group {gid} has one episode; group-relative advantages need two or more")
        adv[members] = (r[members] - r[members].mean()) / (r[members].std() + eps)
    return torch.from_numpy(np.repeat(adv, np.asarray(lengths, dtype=np.int64))).to(torch.get_default_dtype())


# ---------------------------------------------------------------------------------------------------------------
# 4. Clipped PPO loss
# ---------------------------------------------------------------------------------------------------------------


def ppo_loss(
    new_log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    new_value: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate objective (Schulman et al. 2017, arXiv 1707.06347) plus value and entropy terms.

    ``L = max(-A r, -A clip(r, 1 - eps, 1 + eps)).mean() + vf_coef * 0.5 (V - R)^2 .mean() - ent_coef * H.mean()``
    with ``r = exp(new_log_prob - old_log_prob)``. Advantages are normalized to zero mean and unit std when there is
    more than one.

    Args:
        new_log_prob: [B] log density of the stored actions under the current policy.
        old_log_prob: [B] log density under the policy that collected them.
        advantages: [B] advantage estimates.
        new_value: [B] current value predictions.
        returns: [B] value targets.
        entropy: [B] policy entropy.
        clip_coef: Clip range ``eps``.
        vf_coef: Weight of the value loss.
        ent_coef: Weight of the entropy bonus.

    Returns:
        ``(loss, stats)``; ``stats`` holds detached 0-dim tensors ``pg_loss``, ``v_loss``, ``entropy``,
        ``approx_kl`` (the low-variance ``(r - 1) - log r`` estimator) and ``clipfrac``.
    """
    old_log_prob = old_log_prob.detach()
    advantages = advantages.detach()
    returns = returns.detach()
    if advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)).mean()
    v_loss = 0.5 * ((new_value - returns) ** 2).mean()
    ent = entropy.mean()
    loss = pg_loss + vf_coef * v_loss - ent_coef * ent
    with torch.no_grad():
        stats = {
            "pg_loss": pg_loss.detach(),
            "v_loss": v_loss.detach(),
            "entropy": ent.detach(),
            "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
            "clipfrac": ((ratio - 1.0).abs() > clip_coef).float().mean(),
        }
    return loss, stats


# ---------------------------------------------------------------------------------------------------------------
# 5. Rollout storage
# ---------------------------------------------------------------------------------------------------------------


class RolloutBuffer:
    """List-based storage of transitions whose number of slots ``S`` may differ from step to step.

    Steps are stored in collection order (episodes concatenated), so ``rewards``, ``values`` and ``dones`` feed
    :func:`compute_gae` directly.
    """

    def __init__(self) -> None:
        self._feats: list[torch.Tensor] = []
        self._glob: list[torch.Tensor] = []
        self._mask: list[torch.Tensor] = []
        self._z: list[torch.Tensor] = []
        self._log_prob: list[float] = []
        self._value: list[float] = []
        self._reward: list[float] = []
        self._done: list[bool] = []

    def __len__(self) -> int:
        return len(self._reward)

    def add(
        self,
        feats: torch.Tensor,
        glob: torch.Tensor,
        mask: torch.Tensor,
        z: torch.Tensor,
        log_prob: float | torch.Tensor,
        value: float | torch.Tensor,
        reward: float,
        done: bool,
    ) -> None:
        """Append one (unbatched) transition.

        Args:
            feats: [S, F] per-slot features.
            glob: [G] global features.
            mask: bool [S] available slots.
            z: [S] sampled logits (the action).
            log_prob: Log density of ``z`` when it was sampled.
            value: Value estimate of the observation.
            reward: Reward received after the action.
            done: True if the episode ended at this step.
        """
        _check_obs(feats, glob, mask)
        if feats.ndim != 2 or z.shape != mask.shape:
            raise ValueError(f"expected unbatched feats [S, F] and z [S]; got {tuple(feats.shape)}, {tuple(z.shape)}")
        self._feats.append(feats.detach().clone())
        self._glob.append(glob.detach().clone())
        self._mask.append(mask.detach().clone())
        self._z.append(z.detach().clone())
        self._log_prob.append(float(log_prob))
        self._value.append(float(value))
        self._reward.append(float(reward))
        self._done.append(bool(done))

    def clear(self) -> None:
        """Drop all stored transitions."""
        for storage in (self._feats, self._glob, self._mask, self._z, self._log_prob, self._value, self._reward,
                        self._done):
            storage.clear()

    @property
    def rewards(self) -> torch.Tensor:
        """[T] rewards."""
        return torch.tensor(self._reward)

    @property
    def values(self) -> torch.Tensor:
        """[T] value estimates at collection time."""
        return torch.tensor(self._value)

    @property
    def dones(self) -> torch.Tensor:
        """[T] bool episode-end flags."""
        return torch.tensor(self._done, dtype=torch.bool)

    def batches(
        self, minibatch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield shuffled minibatches covering every stored step once, padded to the largest ``S`` in each.

        Args:
            minibatch_size: Steps per minibatch (the last one may be smaller).
            generator: RNG for the shuffle; ``None`` uses torch's global RNG.

        Yields:
            Dicts with ``feats`` [B, S_max, F], ``glob`` [B, G], ``mask`` bool [B, S_max] (padded slots False),
            ``z`` [B, S_max], ``log_prob``, ``value``, ``reward`` [B], ``done`` bool [B] and ``index`` [B] (the
            step positions, to look up advantages and returns).
        """
        if minibatch_size < 1:
            raise ValueError(f"minibatch_size must be >= 1, got {minibatch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, minibatch_size):
            idx = order[start : start + minibatch_size]
            rows = idx.tolist()
            s_max = max(self._mask[i].shape[0] for i in rows)
            b = len(rows)
            f = self._feats[rows[0]].shape[1]
            feats = self._feats[rows[0]].new_zeros(b, s_max, f)
            z = self._z[rows[0]].new_zeros(b, s_max)
            mask = torch.zeros(b, s_max, dtype=torch.bool, device=self._mask[rows[0]].device)
            for j, i in enumerate(rows):
                s = self._mask[i].shape[0]
                feats[j, :s] = self._feats[i]
                z[j, :s] = self._z[i]
                mask[j, :s] = self._mask[i]
            yield {
                "feats": feats,
                "glob": torch.stack([self._glob[i] for i in rows]),
                "mask": mask,
                "z": z,
                "log_prob": torch.tensor([self._log_prob[i] for i in rows]),
                "value": torch.tensor([self._value[i] for i in rows]),
                "reward": torch.tensor([self._reward[i] for i in rows]),
                "done": torch.tensor([self._done[i] for i in rows], dtype=torch.bool),
                "index": idx,
            }


# ---------------------------------------------------------------------------------------------------------------
# 6. Update
# ---------------------------------------------------------------------------------------------------------------


def ppo_update(
    policy: SlotPolicy,
    optimizer: torch.optim.Optimizer,
    buffer: RolloutBuffer,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    epochs: int,
    minibatch_size: int,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    max_grad_norm: float,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Run ``epochs`` passes of clipped-PPO minibatch updates over the buffer.

    Args:
        policy: The policy to train.
        optimizer: Optimizer over ``policy.parameters()``.
        buffer: The collected rollout.
        advantages: [T] advantages (from :func:`compute_gae`), aligned with the buffer.
        returns: [T] value targets, aligned with the buffer.
        epochs: Passes over the buffer.
        minibatch_size: Steps per minibatch.
        clip_coef: PPO clip range.
        vf_coef: Weight of the value loss.
        ent_coef: Weight of the entropy bonus.
        max_grad_norm: Global gradient-norm clip.
        generator: RNG for minibatch shuffling.

    Returns:
        Mean over all minibatches of ``pg_loss``, ``v_loss``, ``entropy``, ``approx_kl`` and ``clipfrac``.
    """
    if len(buffer) == 0:
        raise ValueError("empty rollout buffer")
    if advantages.shape != (len(buffer),) or returns.shape != (len(buffer),):
        raise ValueError(f"advantages/returns must have shape ({len(buffer)},)")
    device = next(policy.parameters()).device
    advantages = advantages.detach().to(device)
    returns = returns.detach().to(device)
    totals: dict[str, torch.Tensor] = {}
    n_batches = 0
    policy.train()
    for _ in range(epochs):
        for mb in buffer.batches(minibatch_size, generator):
            mb = {k: v.to(device) for k, v in mb.items()}
            new_log_prob, entropy, new_value = policy.evaluate(mb["feats"], mb["glob"], mb["mask"], mb["z"])
            idx = mb["index"]
            loss, stats = ppo_loss(
                new_log_prob,
                mb["log_prob"],
                advantages[idx],
                new_value,
                returns[idx],
                entropy,
                clip_coef,
                vf_coef,
                ent_coef,
            )
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
            optimizer.step()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v
            n_batches += 1
    # one host sync at the end rather than one per minibatch
    return {k: float(v) / n_batches for k, v in totals.items()}


# ---------------------------------------------------------------------------------------------------------------
# 7. Save / load (safetensors, no pickle)
# ---------------------------------------------------------------------------------------------------------------


def save_policy(policy: SlotPolicy, path: str | Path) -> None:
    """Write the policy's parameters to a safetensors file, with its sizes in the metadata.

    Args:
        policy: The policy.
        path: Destination file.
    """
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in policy.state_dict().items()}
    metadata = {
        "n_slot_features": str(policy.n_slot_features),
        "n_global_features": str(policy.n_global_features),
        "hidden": str(policy.hidden),
    }
    save_file(tensors, str(path), metadata=metadata)


def load_policy(path: str | Path, n_slot_features: int, n_global_features: int, hidden: int = 32) -> SlotPolicy:
    """Build a :class:`SlotPolicy` of the given sizes and load parameters saved by :func:`save_policy`.

    Args:
        path: File written by :func:`save_policy`.
        n_slot_features: Expected number of per-slot features.
        n_global_features: Expected number of global features.
        hidden: Expected hidden width.

    Returns:
        The loaded policy (on CPU, in eval mode).

    Raises:
        ValueError: If the sizes recorded in the file differ from the ones given.
    """
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    expected = {"n_slot_features": n_slot_features, "n_global_features": n_global_features, "hidden": hidden}
    for key, want in expected.items():
        if key in meta and int(meta[key]) != want:
            raise ValueError(f"{path}: saved {key}={meta[key]}, asked for {want}")
    policy = SlotPolicy(n_slot_features, n_global_features, hidden)
    policy.load_state_dict(load_file(str(path)), strict=True)
    policy.eval()
    return policy
