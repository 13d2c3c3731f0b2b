import numpy as np
import pytest

from proxymix.data.tokenize import Encoded
from proxymix.replay import MixtureSampler, ReservoirBuffer, collate, largest_remainder, plan_microbatches


def test_largest_remainder_exact():
    # quotas 3.2, 3.2, 1.6 -> floors 3, 3, 1 (7); one left goes to the largest remainder (0.6, slot 2)
    assert largest_remainder([0.4, 0.4, 0.2], 8) == [3, 3, 2]
    assert largest_remainder([1, 0, 0], 5) == [5, 0, 0]
    assert sum(largest_remainder(np.random.default_rng(0).random(7), 33)) == 33
    with pytest.raises(ValueError):
        largest_remainder([0, 0], 4)


def test_reservoir_keeps_capacity_and_round_trips():
    rng = np.random.default_rng(0)
    buf = ReservoirBuffer(5)
    items = [Encoded((k, k + 1), 1) for k in range(100)]
    buf.add(items, rng)
    assert len(buf) == 5 and buf.n_seen == 100
    assert set(buf.items) <= set(items)
    other = ReservoirBuffer(0)
    other.load_state_dict(buf.state_dict())
    assert other.items == buf.items


def test_reservoir_is_uniform_over_the_stream():
    counts = np.zeros(20)
    for seed in range(400):
        buf = ReservoirBuffer(5)
        buf.add(list(range(20)), np.random.default_rng(seed))
        counts[buf.items] += 1
    # each item is kept with probability 5/20: expected 100 of 400; all well within +-40
    assert np.all(np.abs(counts - 100) < 40)


def test_sampler_composition_follows_weights_exactly():
    a = [Encoded((1, 2), 1)] * 3
    b = ReservoirBuffer(4)
    b.add([Encoded((7, 8, 9), 1)], np.random.default_rng(0))
    s = MixtureSampler(10, seed=0)
    batch = s.sample([0.7, 0.3], [a, b])
    assert sum(e.ids == (1, 2) for e in batch) == 7 and sum(e.ids == (7, 8, 9) for e in batch) == 3
    state = s.state_dict()
    first = s.sample([0.5, 0.5], [a, b])
    s.load_state_dict(state)
    assert s.sample([0.5, 0.5], [a, b]) == first


def _stream_of(sampler, weights_per_step, sources, keys, slot):
    """Every example slot `slot` contributed, in order, over a run of batches."""
    out = []
    for w in weights_per_step:
        counts = largest_remainder(w, sampler.batch_size)
        batch = sampler.sample(w, sources, keys)
        out += batch[sum(counts[:slot]):sum(counts[:slot + 1])]
    return out


def test_per_slot_streams_do_not_depend_on_the_other_slots_weights():
    a = [Encoded((1, k), 1) for k in range(50)]
    b = [Encoded((2, k), 1) for k in range(50)]
    keys = ["train:a", "replay:b"]
    lo = [[0.9, 0.1]] * 20   # slot 0 draws 9 per batch
    hi = [[0.6, 0.4]] * 30   # slot 0 draws 6 per batch: 180 in all, as many as lo's
    s_lo = _stream_of(MixtureSampler(10, seed=3, streams="per_slot"), lo, [a, b], keys, 0)
    s_hi = _stream_of(MixtureSampler(10, seed=3, streams="per_slot"), hi, [a, b], keys, 0)
    assert len(s_lo) == len(s_hi) == 180 and s_lo == s_hi
    # with one shared stream, slot 1's draws shift slot 0's
    sh_lo = _stream_of(MixtureSampler(10, seed=3), lo, [a, b], keys, 0)
    sh_hi = _stream_of(MixtureSampler(10, seed=3), hi, [a, b], keys, 0)
    assert sh_lo != sh_hi
    # and a different seed gives a different stream
    assert _stream_of(MixtureSampler(10, seed=4, streams="per_slot"), lo, [a, b], keys, 0) != s_lo


def test_per_slot_sampler_state_round_trip():
    a = [Encoded((1, k), 1) for k in range(50)]
    buf = ReservoirBuffer(8)
    buf.add([Encoded((2, k), 1) for k in range(20)], np.random.default_rng(0))
    s = MixtureSampler(10, seed=0, streams="per_slot")
    s.sample([0.5, 0.5], [a, buf], ["train:a", "replay:b"])
    state = s.state_dict()
    first = s.sample([0.3, 0.7], [a, buf], ["train:a", "replay:b"])
    fresh = MixtureSampler(10, seed=0, streams="per_slot")
    fresh.load_state_dict(state)
    assert fresh.sample([0.3, 0.7], [a, buf], ["train:a", "replay:b"]) == first
    with pytest.raises(ValueError, match="key"):
        s.sample([1.0], [a])
    with pytest.raises(ValueError, match="streams"):
        MixtureSampler(10, seed=0, streams="per_task")


def test_microbatches_partition_and_cut_padding():
    lengths = [10] * 16 + [40] * 16
    groups = plan_microbatches(lengths, overhead_tokens=32)
    assert sorted(k for g in groups for k in g) == list(range(32))
    padded = sum(len(g) * max(lengths[k] for k in g) for g in groups)
    assert padded < 32 * 40  # one padded batch would cost 1280 positions
    assert plan_microbatches([5, 6, 7], overhead_tokens=1000) == [[0, 1, 2]]


def test_collate_masks_prompt_and_padding():
    b = collate([Encoded((1, 2, 3), 2), Encoded((4, 5), 1)], pad_id=0)
    assert b["labels"].tolist() == [[-100, -100, 3], [-100, 5, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    left = collate([Encoded((4, 5), 1), Encoded((1, 2, 3), 2)], pad_id=0, left_pad=True)
    assert left["input_ids"].tolist()[0] == [0, 4, 5]
