"""A continual run over the user's own JSONL tasks (suite: files), safety from the built-in set."""

import json

import numpy as np

from proxymix.controllers.baselines import make_baseline
from proxymix.engine import run_continual


def test_run_on_jsonl_tasks(tmp_path, tiny_cfg):
    rng = np.random.default_rng(0)
    paths = {}
    for name, fmt in (("echo", "pc"), ("double", "alpaca"), ("chat", "messages")):
        lines = []
        for _ in range(30):
            x = int(rng.integers(10))
            if fmt == "pc":
                rec = {"prompt": f"echo {x} =", "completion": str(x)}
            elif fmt == "alpaca":
                rec = {"instruction": "double", "input": str(x), "output": str(2 * x)}
            else:
                rec = {"messages": [{"role": "user", "content": f"next {x}"}, {"role": "assistant", "content": str(x + 1)}]}
            lines.append(json.dumps(rec))
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("\n".join(lines) + "\n")
    tasks = "{" + ", ".join(f"{k}: {v}" for k, v in paths.items()) + "}"
    cfg = tiny_cfg("data.suite=files", f"data.tasks={tasks}", "data.sequence=[echo, double, chat]")
    res, _ = run_continual(cfg, make_baseline("uniform"))
    assert res.tasks == ["safety", "echo", "double", "chat"]
    assert res.R.shape == (4, 3)
