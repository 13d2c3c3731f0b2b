"""Learning the controller: episodes (whole continual runs) in a process pool, PPO updates, a cost ledger.

Proxy RL and Oracle Target RL are the same code; only the model in the config differs. Every rollout's FLOPs
(6 N D train, 2 N D eval, from the engine's counters) and wall time go into the ledger, so the policy-learning
cost of the two can be compared exactly.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from proxymix.config import ConfigError, RunConfig, dump_config, from_dict, to_dict
from proxymix.controllers.features import GLOBAL_FEATURES, SLOT_FEATURES
from proxymix.controllers.learned import LearnedController
from proxymix.data.suite import SEQUENCES
from proxymix.io import atomic_write, write_csv, write_json
from proxymix.models import count_params
from proxymix.rl.env import ProxyMixEnv, terminal_score
from proxymix.rl.ppo import RolloutBuffer, SlotPolicy, compute_gae, group_advantages, ppo_update


def sample_episodes(cfg: RunConfig, update: int) -> list[dict]:
    """The episodes of one update: random ordered subsets of the training domains, fresh seeds.

    Deterministic in (cfg.seed, update). Never a held-out domain, never a standard evaluation sequence (or a
    prefix of one), never an evaluation seed. With `rl.group_size` > 1, each scenario (sequence, seed) is repeated
    in a group whose members differ only in their exploration noise (`noise_seed`).
    """
    rl = cfg.rl
    rng = np.random.default_rng([cfg.seed, update, 17])
    forbidden = {tuple(s[: rl.tasks_per_episode]) for s in SEQUENCES.values()}
    n_scenarios = rl.episodes_per_update // rl.group_size
    out = []
    for k in range(n_scenarios):
        for _ in range(1000):
            seq = [str(t) for t in rng.permutation(rl.train_domains)[: rl.tasks_per_episode]]
            if tuple(seq) not in forbidden:
                break
        else:
            raise ConfigError("rl.train_domains: every episode drawn is a standard evaluation sequence; add domains")
        index = update * n_scenarios + k
        if rl.episode_seeds > 0:
            index %= rl.episode_seeds
        seed = rl.episode_seed_offset + index
        for member in range(rl.group_size):
            # member 0 draws its noise from the episode seed itself; the others from distinct streams
            out.append({"sequence": seq, "seed": seed, "group": k,
                        "noise_seed": seed if member == 0 else 10_000_019 * member + seed})
    return out


def run_episode(job: dict) -> dict:
    """One rollout with a sampling policy (top-level and plain-data in/out, so any Pool can run it)."""
    torch.set_num_threads(1)  # parallel workers on few cores: one thread each avoids oversubscription
    cfg: RunConfig = job["cfg"]
    policy = SlotPolicy(len(SLOT_FEATURES), len(GLOBAL_FEATURES), cfg.rl.hidden)
    policy.load_state_dict({k: torch.from_numpy(v) for k, v in job["policy"].items()})
    gen = torch.Generator().manual_seed(int(job["noise_seed"]))
    env = ProxyMixEnv(cfg)
    t0 = time.perf_counter()
    obs, info = env.reset(options={"sequence": job["sequence"], "seed": job["seed"]})
    steps = []
    while True:
        n = info["n_slots"]
        feats = torch.from_numpy(obs["feats"][:n])
        glob = torch.from_numpy(obs["glob"])
        mask = torch.from_numpy(obs["mask"][:n].astype(bool))
        w, z, logp, v = policy.act(feats, glob, mask, generator=gen, deterministic=job.get("deterministic", False))
        action = np.zeros(env.max_slots)
        action[:n] = w.double().numpy() / float(w.double().sum())
        obs, reward, done, _, info = env.step(action)
        steps.append({"feats": feats.numpy(), "glob": glob.numpy(), "mask": mask.numpy(), "z": z.numpy(),
                      "log_prob": float(logp), "value": float(v), "reward": float(reward), "done": done,
                      "replay_share": float(1.0 - action[0])})
        if done:
            break
    res = info["result"]
    c = res.counters
    return {"steps": steps, "sequence": job["sequence"], "seed": job["seed"], "group": job["group"],
            "metrics": res.metrics,
            "return": sum(s["reward"] for s in steps), "terminal": terminal_score(res, cfg.rl),
            "train_flops": c["train_flops"], "eval_flops": c["eval_flops"], "wall_s": time.perf_counter() - t0,
            "n_params": res.metrics["cost/n_params"]}


def make_pool(kind: str, workers: int):
    """A Pool with `.map` and `.close`: multiprocessing (spawn), Ray's drop-in, or in-process."""
    if kind == "serial" or workers == 1:
        return None
    if kind == "ray":
        try:
            from ray.util.multiprocessing import Pool
        except ImportError:
            raise ConfigError("rl.pool=ray needs the optional extra: pip install 'proxymix[ray]'") from None
        return Pool(processes=workers)
    import multiprocessing as mp

    # spawn: no forked torch/OpenMP state, and the same start method everywhere
    return mp.get_context("spawn").Pool(processes=workers)


# ------------------------------------------------------------------------------------------- checkpointing
def _save_checkpoint(ckpt: Path, policy, optimizer, state: dict) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    tensors = {}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for k, v in st.items():
            tensors[f"{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    groups = opt["param_groups"]
    atomic_write(ckpt / "optimizer.safetensors", lambda f: f.write(_st_bytes(tensors)), mode="wb")
    atomic_write(ckpt / "policy.safetensors",
                 lambda f: f.write(_st_bytes({k: v.detach().clone() for k, v in policy.state_dict().items()})),
                 mode="wb")
    write_json(ckpt / "trainer_state.json", {**state, "param_groups": groups})


def _st_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


def _load_checkpoint(ckpt: Path, policy, optimizer) -> dict:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    policy.load_state_dict(load_file(str(ckpt / "policy.safetensors")))
    flat = load_file(str(ckpt / "optimizer.safetensors"))
    opt_state: dict = {}
    for key, v in flat.items():
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    return state


def _resumable(cfg: dict | None) -> dict | None:
    """The config a checkpoint must match to resume: everything except the number of updates (extending a
    finished run is a resume too) and how episodes are spread over processes (each episode is a function of its
    job alone, and the pool returns them in order)."""
    if cfg is None:
        return None
    try:  # keys added to the config schema since the checkpoint was made take their defaults
        cfg = to_dict(from_dict(cfg))
    except ConfigError:
        return {"unreadable": cfg}  # a checkpoint config this version cannot read never matches
    for key in ("updates", "workers", "pool"):
        cfg["rl"].pop(key, None)
    cfg["train"].pop("progress", None)
    return cfg


# ------------------------------------------------------------------------------------------- training
def train_controller(cfg: RunConfig, out: str | Path, oracle: bool = False, command: str | None = None,
                     progress: bool = True) -> LearnedController:
    """PPO on `cfg`'s model (the proxy, or the target when `oracle`); resumes from `out/checkpoint`."""
    out = Path(out)
    rl = cfg.rl
    torch.manual_seed(cfg.seed)
    policy = SlotPolicy(len(SLOT_FEATURES), len(GLOBAL_FEATURES), rl.hidden, init_log_std=rl.init_log_std)
    optimizer = torch.optim.Adam(policy.parameters(), lr=rl.lr, eps=1e-5)
    ckpt = out / "checkpoint"
    state = {"update": 0, "history": [], "ledger": []}
    if (ckpt / "trainer_state.json").is_file():
        state = _load_checkpoint(ckpt, policy, optimizer)
        if _resumable(state.get("config")) != _resumable(to_dict(cfg)):
            raise ConfigError(f"{ckpt}: checkpoint was made with a different config; use a new --out")
        print(f"resuming from update {state['update']}", file=sys.stderr)
    state["config"] = to_dict(cfg)

    episode_cfg = copy.deepcopy(cfg)
    episode_cfg.train.progress = False
    pool = make_pool(rl.pool, rl.workers)
    bar = tqdm(range(state["update"], rl.updates), desc="rl updates", disable=not progress, initial=state["update"],
               total=rl.updates)
    try:
        for update in bar:
            t0 = time.perf_counter()
            weights = {k: v.detach().numpy().copy() for k, v in policy.state_dict().items()}
            jobs = [{"cfg": episode_cfg, "policy": weights, **ep} for ep in sample_episodes(cfg, update)]
            episodes = pool.map(run_episode, jobs) if pool else [run_episode(j) for j in jobs]
            rollout_s = time.perf_counter() - t0

            buffer = RolloutBuffer()
            for ep in episodes:
                for s in ep["steps"]:
                    buffer.add(torch.from_numpy(s["feats"]), torch.from_numpy(s["glob"]), torch.from_numpy(s["mask"]),
                               torch.from_numpy(s["z"]), s["log_prob"], s["value"], s["reward"], s["done"])
            adv, ret = compute_gae(buffer.rewards, buffer.values, buffer.dones, 0.0, rl.gamma, rl.gae_lambda)
            if rl.group_size > 1:  # the critic still learns the returns; the policy uses the group baseline
                adv = group_advantages([e["return"] for e in episodes], [e["group"] for e in episodes],
                                       [len(e["steps"]) for e in episodes])
            t1 = time.perf_counter()
            stats = ppo_update(policy, optimizer, buffer, adv, ret, rl.epochs, rl.minibatch_size, rl.clip_coef,
                               rl.vf_coef, rl.ent_coef, rl.max_grad_norm,
                               torch.Generator().manual_seed(cfg.seed * 100003 + update))
            update_s = time.perf_counter() - t1
            n_pol = count_params(policy)
            for ep in episodes:
                state["ledger"].append({"kind": "rollout", "update": update, "sequence": ep["sequence"],
                                        "seed": ep["seed"], "train_flops": ep["train_flops"],
                                        "eval_flops": ep["eval_flops"], "wall_s": ep["wall_s"],
                                        "n_params": ep["n_params"]})
            state["ledger"].append({"kind": "update", "update": update, "train_flops":
                                    6.0 * n_pol * len(buffer) * rl.epochs, "eval_flops": 0.0, "wall_s": update_s})
            row = {"update": update,
                   "return_mean": float(np.mean([e["return"] for e in episodes])),
                   "terminal_mean": float(np.mean([e["terminal"] for e in episodes])),
                   "terminal_min": float(np.min([e["terminal"] for e in episodes])),
                   "terminal_max": float(np.max([e["terminal"] for e in episodes])),
                   "avg_accuracy": float(np.mean([e["metrics"]["cl/avg_accuracy"] for e in episodes])),
                   "forgetting": float(np.mean([e["metrics"]["cl/forgetting"] for e in episodes])),
                   "safety": float(np.mean([e["metrics"].get("safety/score", 0.0) for e in episodes])),
                   "replay_share": float(np.mean([s["replay_share"] for e in episodes for s in e["steps"]])),
                   **_spread(episodes),
                   "log_std": float(policy.log_std.detach()), "rollout_s": rollout_s, "update_s": update_s,
                   **{f"rl/{k}": v for k, v in stats.items()}}
            state["history"].append(row)
            state["update"] = update + 1
            _save_checkpoint(ckpt, policy, optimizer, state)
            _write_curve(out, state["history"])
            bar.set_postfix(terminal=f"{row['terminal_mean']:.3f}", replay=f"{row['replay_share']:.2f}")
    finally:
        if pool is not None:
            pool.close()

    ctrl = LearnedController(policy, name="proxymix-oracle" if oracle else "proxymix")
    meta = {"name": ctrl.name, "kind": "oracle_target_rl" if oracle else "proxy_rl", "command": command,
            "seed": cfg.seed, "training": to_dict(cfg.rl), "model": to_dict(cfg.model),
            "run": {"train": to_dict(cfg.train), "replay": to_dict(cfg.replay), "data": to_dict(cfg.data)},
            "n_params": state["ledger"][0]["n_params"] if state["ledger"] else None,
            "cost": ledger_summary(state["ledger"]), "history": state["history"]}
    ctrl.meta = meta
    ctrl.save(out, meta)
    write_csv(out / "ledger.csv", ["kind", "update", "sequence", "seed", "train_flops", "eval_flops", "wall_s"],
              [[e["kind"], e["update"], " ".join(e.get("sequence", [])), e.get("seed", ""), e["train_flops"],
                e["eval_flops"], f"{e['wall_s']:.3f}"] for e in state["ledger"]])
    atomic_write(out / "config.yaml", lambda f: f.write(dump_config(cfg)))
    return ctrl


def _spread(episodes: list[dict]) -> dict:
    """Where the terminal score varies: within groups (the policy's choices) vs between scenarios (order, seed)."""
    terms = np.array([e["terminal"] for e in episodes])
    groups = np.array([e["group"] for e in episodes])
    ids = np.unique(groups)
    within = [terms[groups == g].std(ddof=1) for g in ids if (groups == g).sum() > 1]
    means = [terms[groups == g].mean() for g in ids]
    return {"terminal_std_within": float(np.sqrt(np.mean(np.square(within)))) if within else None,
            "terminal_std_between": float(np.std(means, ddof=1)) if len(means) > 1 else None}


def ledger_summary(ledger: list[dict]) -> dict:
    """Totals of the cost ledger: FLOPs and wall time of all rollouts and updates."""
    rollouts = [e for e in ledger if e["kind"] == "rollout"]
    flops = sum(e["train_flops"] + e["eval_flops"] for e in ledger)
    return {"episodes": len(rollouts), "updates": len({e["update"] for e in ledger}),
            "rollout_flops": sum(e["train_flops"] + e["eval_flops"] for e in rollouts), "total_flops": flops,
            "flops_per_episode": (sum(e["train_flops"] + e["eval_flops"] for e in rollouts) / len(rollouts))
            if rollouts else 0.0,
            "rollout_wall_s": sum(e["wall_s"] for e in rollouts),
            "update_wall_s": sum(e["wall_s"] for e in ledger if e["kind"] == "update")}


def _write_curve(out: Path, history: list[dict]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = list(history[0])
    write_csv(out / "learning_curve.csv", cols, [[r[c] for c in cols] for r in history])
    x = [r["update"] for r in history]
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot(121)
    ax.plot(x, [r["terminal_mean"] for r in history], marker="o", label="terminal score (mean, min-max band)")
    ax.fill_between(x, [r["terminal_min"] for r in history], [r["terminal_max"] for r in history], alpha=0.2)
    ax.plot(x, [r["return_mean"] for r in history], marker=".", label="episode return (incl. shaping)")
    ax.set_xlabel("update")
    ax.legend(fontsize=7)
    ax2 = fig.add_subplot(122)
    ax2.plot(x, [r["replay_share"] for r in history], marker="o", color="C2", label="mean replay share")
    for key, label, color in (("terminal_std_within", "score std within groups", "C3"),
                              ("terminal_std_between", "score std between scenarios", "C4")):
        ys = [r.get(key) for r in history]
        if any(y is not None for y in ys):
            ax2.plot(x, [float("nan") if y is None else y for y in ys], marker=".", color=color, label=label)
    ax2.set_xlabel("update")
    ax2.legend(fontsize=7)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    atomic_write(out / "learning_curve.png", lambda f: fig.savefig(f, format="png", dpi=100), mode="wb")


def record_cost_ratio(proxy_dir: str | Path, oracle_dir: str | Path) -> dict:
    """Policy-learning cost of Oracle Target RL relative to proxy RL, written into both controller.json files.

    `total_flops_ratio` compares the two runs as they were made; `per_episode_flops_ratio` compares one
    episode of each (what the ratio would be at an equal number of episodes).
    """
    docs = {}
    for key, d in (("proxy", proxy_dir), ("oracle", oracle_dir)):
        path = Path(d) / "controller.json"
        if not path.is_file():
            raise ConfigError(f"{path}: not found")
        docs[key] = (path, json.loads(path.read_text()))
    p, o = docs["proxy"][1]["cost"], docs["oracle"][1]["cost"]
    ratio = {"proxy": str(proxy_dir), "oracle": str(oracle_dir),
             "total_flops_ratio": o["total_flops"] / p["total_flops"],
             "per_episode_flops_ratio": o["flops_per_episode"] / p["flops_per_episode"],
             "proxy_episodes": p["episodes"], "oracle_episodes": o["episodes"],
             "wall_ratio_per_episode": (o["rollout_wall_s"] / o["episodes"]) / (p["rollout_wall_s"] / p["episodes"])}
    for path, doc in docs.values():
        doc["cost_ratio_oracle_vs_proxy"] = ratio
        write_json(path, doc)
    return ratio
