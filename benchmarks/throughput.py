"""Training throughput on mixed batches: length-aware micro-batches vs one batch padded to its longest example.

Both variants run in the same process, interleaved in rounds, on identical batches (same sampler seed), so the
ratio is robust to a noisy machine. Reports real (non-pad) tokens per second.

    .venv/bin/python benchmarks/throughput.py --config configs/quick.yaml --steps 40 --rounds 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from proxymix.config import load_config
from proxymix.engine import ContinualRun


def measure(run: ContinualRun, length_aware: bool, steps: int, seed: int) -> tuple[float, float]:
    run.cfg.train.length_aware = length_aware
    run.sampler.rng = np.random.default_rng(seed)
    run._new_optimizer(steps)
    # Half current task (short arithmetic), half safety (long requests): the mix the engine sees after phase 0.
    sources = [run.enc[run.sequence[0]]["train"], run.enc["safety"]["train"]]
    tokens0, padded0 = run.counters["train_tokens"], run.counters["padded_tokens"]
    t0 = time.perf_counter()
    for _ in range(steps):
        run._train_step(np.array([0.5, 0.5]), sources)
    dt = time.perf_counter() - t0
    real = run.counters["train_tokens"] - tokens0
    return real / dt, 1 - real / (run.counters["padded_tokens"] - padded0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/quick.yaml")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(args.config, ["train.progress=false", *args.overrides])
    run = ContinualRun(cfg)
    measure(run, True, 5, 0)  # warm-up
    res = {True: [], False: []}
    for r in range(args.rounds):
        for la in (False, True):
            res[la].append(measure(run, la, args.steps, seed=r))
    print(f"config {args.config} {' '.join(args.overrides)}: {run.n_params:,} params, batch {cfg.train.batch_size}, "
          f"{args.steps} steps x {args.rounds} rounds")
    print("| batching | real tokens/s (median) | padding fraction |")
    print("|---|---|---|")
    for la, label in ((False, "padded to longest"), (True, "length-aware micro-batches")):
        tps = np.median([t for t, _ in res[la]])
        pad = np.mean([p for _, p in res[la]])
        print(f"| {label} | {tps:,.0f} | {pad:.3f} |")
    ratio = np.median([a[0] / b[0] for a, b in zip(res[True], res[False])])
    print(f"speed-up (length-aware / padded, median of paired rounds): {ratio:.2f}x")


if __name__ == "__main__":
    main()
