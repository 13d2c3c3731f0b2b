"""Shared fixtures: tiny models and short runs, sized for seconds on 2 CPU cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models are dominated by per-op overhead: one thread is faster and immune to a busy second core.
torch.set_num_threads(1)

from proxymix.config import load_config  # noqa: E402

TINY = [
    "seed=0", "model.family=llama", "model.hidden=16", "model.n_layers=1", "model.n_heads=2",
    "train.steps_per_task=6", "train.safety_steps=4", "train.batch_size=8", "train.decision_interval=3",
    "train.val_examples=4", "train.warmup_steps=1", "train.progress=false",
    "data.n_train=24", "data.n_val=6", "data.n_test=6", "data.vocab_size=200", "data.sequence=[sort, capital, max]",
    "replay.buffer_size=8", "replay.safety_buffer_size=8",
]


@pytest.fixture
def tiny_cfg():
    """Build a tiny RunConfig; extra dotted overrides win over the tiny defaults."""
    def make(*overrides: str):
        return load_config(None, TINY + list(overrides))
    return make
