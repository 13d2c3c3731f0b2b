"""Replay buffers and the mixture sampler that composes every training batch from slot weights.

Components own their state: a buffer or the sampler never reaches into the engine; the engine asks them for
examples and saves their `state_dict()`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from proxymix.config import SAMPLER_STREAMS
from proxymix.data.tokenize import Encoded


class Buffer(Protocol):
    def add(self, items: Sequence[Any], rng: np.random.Generator) -> None: ...
    def sample(self, n: int, rng: np.random.Generator) -> list[Any]: ...
    def __len__(self) -> int: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class ReservoirBuffer:
    """Fixed-budget uniform sample of everything ever added (Vitter's algorithm R)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items: list[Any] = []
        self.n_seen = 0

    def add(self, items: Sequence[Any], rng: np.random.Generator) -> None:
        for item in items:
            self.n_seen += 1
            if len(self.items) < self.capacity:
                self.items.append(item)
            else:
                j = int(rng.integers(self.n_seen))
                if j < self.capacity:
                    self.items[j] = item

    def sample(self, n: int, rng: np.random.Generator) -> list[Any]:
        if n and not self.items:
            raise ValueError("sample from an empty buffer")
        return [self.items[k] for k in rng.integers(len(self.items), size=n)]

    def __len__(self) -> int:
        return len(self.items)

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "n_seen": self.n_seen,
                "items": [[list(e.ids), e.n_prompt] for e in self.items]}

    def load_state_dict(self, state: dict) -> None:
        self.capacity, self.n_seen = state["capacity"], state["n_seen"]
        self.items = [Encoded(tuple(ids), n) for ids, n in state["items"]]


def largest_remainder(weights: Sequence[float], total: int) -> list[int]:
    """Integer counts summing to `total`, proportional to `weights` (Hamilton's method; ties -> lower index)."""
    w = np.asarray(weights, dtype=np.float64)
    if total < 0 or w.ndim != 1 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need non-negative weights with a positive sum and total >= 0, got {weights}, {total}")
    quotas = w / w.sum() * total
    counts = np.floor(quotas).astype(int)
    remainder = quotas - counts
    order = sorted(range(len(w)), key=lambda k: (-remainder[k], k))
    for k in order[: total - counts.sum()]:
        counts[k] += 1
    return counts.tolist()


class MixtureSampler:
    """Draws a batch whose composition over slots follows the current weights exactly (largest remainder).

    `streams="shared"` draws every slot from one generator, so changing one slot's count shifts every later draw
    of every slot. `streams="per_slot"` gives each source its own generator (seeded from the run seed and the
    source's key), so a slot's sequence of examples does not depend on how much the other slots are weighted:
    two runs that differ only in their mixtures see the same examples in the same order, just in other amounts.
    These are common random numbers: comparing schedules (or RL episodes of one scenario) then measures the
    schedules, not which examples each happened to draw. Each batch is a uniform draw from each source either way.
    """

    def __init__(self, batch_size: int, seed: int, streams: str = "shared"):
        if streams not in SAMPLER_STREAMS:
            raise ValueError(f"streams must be one of {SAMPLER_STREAMS}, got {streams!r}")
        self.batch_size = batch_size
        self.seed = seed
        self.streams = streams
        self.rng = np.random.default_rng(seed)
        self.slot_rngs: dict[str, np.random.Generator] = {}

    def _rng(self, key: str | None) -> np.random.Generator:
        if self.streams == "shared":
            return self.rng
        if key is None:
            raise ValueError("per_slot streams need a key for every source")
        if key not in self.slot_rngs:
            self.slot_rngs[key] = np.random.default_rng([self.seed, 2, zlib.crc32(key.encode())])
        return self.slot_rngs[key]

    def sample(self, weights: Sequence[float], sources: Sequence[Buffer | Sequence[Encoded]],
               keys: Sequence[str] | None = None) -> list[Encoded]:
        """`sources[k]` is a buffer or a list of examples; slot k contributes round(weights[k] * batch) items.

        `keys[k]` names source k's stream (needed for per_slot streams, ignored for shared)."""
        out: list[Encoded] = []
        keys = list(keys) if keys is not None else [None] * len(sources)
        for n, src, key in zip(largest_remainder(weights, self.batch_size), sources, keys):
            if n == 0:
                continue
            rng = self._rng(key)
            if hasattr(src, "sample"):
                out.extend(src.sample(n, rng))
            else:
                out.extend(src[k] for k in rng.integers(len(src), size=n))
        return out

    def state_dict(self) -> dict:
        return {"batch_size": self.batch_size, "streams": self.streams, "rng": self.rng.bit_generator.state,
                "slot_rngs": {k: g.bit_generator.state for k, g in self.slot_rngs.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.batch_size = state["batch_size"]
        self.streams = state.get("streams", "shared")
        self.rng.bit_generator.state = state["rng"]
        self.slot_rngs = {}
        for key, bits in state.get("slot_rngs", {}).items():
            self._rng(key).bit_generator.state = bits


def plan_microbatches(lengths: Sequence[int], overhead_tokens: int) -> list[list[int]]:
    """Split a batch into length-homogeneous micro-batches minimising padded tokens + per-forward overhead.

    Mixed batches (short arithmetic next to long safety requests) waste most of their compute on padding when
    padded to the longest example. Sorting by length and cutting optimally (an O(n^2) dynamic programme over the
    sorted lengths) keeps the batch composition and the loss exactly the same (losses are summed over tokens and
    divided by the batch's target-token count) while computing far fewer pad positions.
    Returns lists of indices into `lengths`.
    """
    order = sorted(range(len(lengths)), key=lambda k: lengths[k])
    srt = [lengths[k] for k in order]
    n = len(srt)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            # items i..j-1 in one micro-batch padded to srt[j-1] (the longest, since sorted)
            cost = best[i] + (j - i) * srt[j - 1] + overhead_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def collate(examples: Sequence[Encoded], pad_id: int, left_pad: bool = False) -> dict[str, torch.Tensor]:
    """Pad to the longest example; labels are -100 on prompt and padding (completion-only loss)."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e.ids)
        sl = slice(width - n, width) if left_pad else slice(0, n)
        ids[r, sl] = torch.tensor(e.ids)
        attn[r, sl] = 1
        lab = torch.tensor(e.ids)
        lab[: e.n_prompt] = -100
        labels[r, sl] = lab
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}
