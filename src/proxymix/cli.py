"""`proxymix` command line: one subcommand, one function. `proxymix <command> --help` is the manual."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from proxymix.config import ConfigError, RunConfig, load_config
from proxymix.data.loaders import DataError


def _config_path(path: str | None) -> str | Path | None:
    """A config file path, or the name of a config in ./configs ('quick', 'target-quick')."""
    if path is None or Path(path).exists():
        return path
    local = Path("configs") / f"{path}.yaml"
    return local if local.exists() else path


def _load(args, extra: list[str] = ()) -> RunConfig:
    overrides = list(args.overrides) + list(extra)
    if getattr(args, "seed", None) is not None:
        overrides.append(f"seed={args.seed}")
    return load_config(_config_path(args.config), overrides)


def make_controller(name: str, cfg: RunConfig, out: Path | None = None, force: bool = False):
    """A baseline by name or a trained controller from its directory (`default` = the shipped one)."""
    from proxymix.controllers.baselines import make_baseline
    from proxymix.controllers.learned import DEFAULT_CONTROLLER, load_controller

    if name == "multitask":
        return None
    if name == "default":
        return load_controller(DEFAULT_CONTROLLER)
    if Path(name).is_dir():
        return load_controller(name)
    try:
        return make_baseline(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def cmd_run(args) -> int:
    """Run one continual sequence with a controller and write the run directory."""
    from proxymix.engine import run_continual
    from proxymix.report.run_report import write_run

    extra = [f"controller.name={args.controller}"] if args.controller else []
    cfg = _load(args, extra)
    controller = make_controller(cfg.controller.name, cfg)
    out = Path(args.out or f"runs/{cfg.controller.name.replace(':', '-').replace('/', '_')}-s{cfg.seed}-"
                           f"{time.strftime('%Y%m%d-%H%M%S')}")
    res, run = run_continual(cfg, controller, multitask=controller is None)
    write_run(out, res, cfg)
    run.tok.save_pretrained(str(out / "tokenizer"))
    print((out / "report.md").read_text())
    print(f"run directory: {out}")
    return 0


def cmd_demo(args) -> int:
    """A proxy-scale continual run on the built-in suite, no replay vs a fixed replay ratio, with a table."""
    from proxymix.engine import run_continual
    from proxymix.controllers.baselines import make_baseline
    from proxymix.report.run_report import metrics_payload, results_table, write_run

    cfg = _load(argparse.Namespace(config=args.config, overrides=args.overrides, seed=args.seed))
    out = Path(args.out)
    payloads = []
    for name in ("no_replay", "fixed:0.3"):
        print(f"== {name}", flush=True)
        res, _ = run_continual(cfg, make_baseline(name))
        write_run(out / name.replace(":", "-"), res, cfg)
        payloads.append(metrics_payload(res, cfg))
    print(results_table(payloads))
    print(f"run directories under {out}")
    return 0


def cmd_train_controller(args) -> int:
    """Learn a controller by PPO over proxy continual runs (or on the target with --oracle)."""
    from proxymix.rl.trainer import train_controller

    cfg = _load(args)
    command = "proxymix " + " ".join(sys.argv[1:]) if args.command_line is None else args.command_line
    ctrl = train_controller(cfg, args.out, oracle=args.oracle, command=command, progress=cfg.train.progress)
    cost = ctrl.meta["cost"]
    print(f"controller written to {args.out}: {cost['episodes']} episodes, {cost['total_flops']:.3g} FLOPs, "
          f"{cost['rollout_wall_s']:.0f} s of rollouts")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="proxymix", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="one continual run with a controller (baseline name or controller directory)")
    r.add_argument("--config", required=True, help="YAML config file (or a shipped one: quick, target-quick)")
    r.add_argument("--controller", help="no_replay, fixed:R, uniform, loss_prop[:R], exp3, multitask, or a directory")
    r.add_argument("--out", help="run directory (default runs/<controller>-s<seed>-<time>)")
    r.add_argument("--seed", type=int, help="the one seed (data, init, sampling)")
    r.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.lr=1e-3")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("train-controller", help="learn a replay controller by RL on the proxy (or --oracle: target)")
    t.add_argument("--config", required=True, help="run config with an `rl:` section")
    t.add_argument("--out", required=True, help="controller directory (resumes from its checkpoint)")
    t.add_argument("--oracle", action="store_true", help="label this run Oracle Target RL (episodes on this model)")
    t.add_argument("--seed", type=int)
    t.add_argument("overrides", nargs="*")
    t.set_defaults(func=cmd_train_controller, command_line=None)

    d = sub.add_parser("demo", help="the main job on the built-in suite, small models, CPU")
    d.add_argument("--config", default="quick")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--seed", type=int)
    d.add_argument("overrides", nargs="*")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"proxymix: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("proxymix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
