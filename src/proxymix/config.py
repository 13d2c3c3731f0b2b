"""Typed run configuration: YAML -> small dataclasses, dotted CLI overrides, strict keys.

Every knob has exactly one default, declared here. Unknown keys are errors with a "did you mean" hint, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad configuration value or key; the CLI prints it as one line and exits 2."""


def _require_positive(section: object, name: str, keys: tuple[str, ...]) -> None:
    """Raise a ConfigError naming `name.key` for the first of `keys` below 1."""
    for key in keys:
        if getattr(section, key) < 1:
            raise ConfigError(f"{name}.{key} must be >= 1, got {getattr(section, key)}")


@dataclass
class DataConfig:
    suite: str = "builtin"
    """'builtin' (generated offline from the seed) or 'files' (tasks from `tasks`)."""
    sequence: list[str] | str = "seq1"
    """Domain tasks in training order, or the name of a standard sequence (seq1..seq5). Safety is always first."""
    tasks: dict[str, str] = field(default_factory=dict)
    """For suite='files': task name -> JSONL file or directory saved with `datasets.save_to_disk`."""
    n_train: int = 512
    """Training examples generated per built-in task (memorization tasks use their whole fact table)."""
    n_val: int = 48
    """Validation examples per task (used for the controller's losses)."""
    n_test: int = 64
    """Held-out test examples per task (used for R and the safety score)."""
    max_length: int = 64
    """Examples longer than this (prompt + completion tokens) are truncated from the left of the prompt."""
    vocab_size: int = 768
    """BPE vocabulary size when a tokenizer is trained on the suite."""
    tokenizer: str | None = None
    """Directory of a saved tokenizer to load instead of training one (e.g. the model's own)."""
    safety: bool = True
    """Train the alignment/safety task first and keep it as a replay buffer."""

    def __post_init__(self) -> None:
        if self.suite not in ("builtin", "files"):
            raise ConfigError(f"data.suite must be 'builtin' or 'files', got {self.suite!r}")
        if self.suite == "files" and not self.tasks:
            raise ConfigError("data.tasks must name at least one file when data.suite is 'files'")
        _require_positive(self, "data", ("n_train", "n_val", "n_test", "max_length", "vocab_size"))


@dataclass
class ModelConfig:
    family: str = "llama"
    """Architecture for a model built from config: llama, gpt2, gpt_neox or qwen2."""
    n_layers: int = 2
    hidden: int = 64
    n_heads: int = 4
    intermediate: int | None = None
    """MLP width; default 4 * hidden for gpt2/gpt_neox and 2 * hidden for llama/qwen2 (gated MLP)."""
    path: str | None = None
    """Local directory to load with `from_pretrained` instead of building from the spec above."""
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0

    def __post_init__(self) -> None:
        families = ("llama", "gpt2", "gpt_neox", "qwen2")
        if self.path is None and self.family not in families:
            raise ConfigError(f"model.family must be one of {families}, got {self.family!r}")
        if self.hidden % self.n_heads:
            raise ConfigError(f"model.hidden ({self.hidden}) must be divisible by model.n_heads ({self.n_heads})")


SAMPLER_STREAMS = ("shared", "per_slot")
"""How `replay.MixtureSampler` draws examples: one random stream for every slot, or one per source."""


@dataclass
class TrainConfig:
    steps_per_task: int = 150
    """Optimizer steps spent on each domain task."""
    safety_steps: int = 150
    """Optimizer steps for the alignment/safety phase (task 0)."""
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    """Linear warm-up at the start of every phase, then constant (each phase is a new fine-tuning job)."""
    grad_clip: float = 1.0
    decision_interval: int = 25
    """The controller is asked for a new mixture every this many optimizer steps."""
    val_examples: int = 32
    """Validation examples per slot evaluated at each decision (a fixed subset, for cheap and stable losses)."""
    precision: str = "auto"
    """'fp32', 'bf16', or 'auto' (bf16 on GPU, fp32 on CPU where bf16 autocast is much slower)."""
    device: str = "auto"
    length_aware: bool = True
    """Split each mixed batch into length-homogeneous micro-batches (same loss, far less padding)."""
    threads: int = 0
    """CPU threads for torch (0 = torch's default). Tiny models run faster on 1 thread, and parallel RL workers
    should each use 1 so they do not oversubscribe the cores."""
    progress: bool = True
    sampler_streams: str = "shared"
    """'shared': one random stream draws every slot's examples. 'per_slot': each source (task split, replay
    buffer, safety buffer) has its own stream, so runs that differ only in their mixtures draw the same examples in
    the same order (common random numbers; see `replay.MixtureSampler`). Measured on the built-in suite, it does
    not make runs less sensitive to their schedule (BENCHMARKS.md), so the shipped configs keep 'shared'."""

    def __post_init__(self) -> None:
        if self.sampler_streams not in SAMPLER_STREAMS:
            raise ConfigError(f"train.sampler_streams must be one of {SAMPLER_STREAMS}, got {self.sampler_streams!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train.precision must be auto, fp32 or bf16, got {self.precision!r}")
        _require_positive(self, "train", ("steps_per_task", "batch_size", "decision_interval", "val_examples"))
        if self.safety_steps < 0:
            raise ConfigError(f"train.safety_steps must be >= 0, got {self.safety_steps}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")


@dataclass
class ReplayConfig:
    buffer_size: int = 128
    """Examples kept per finished task (reservoir sampling over its training stream)."""
    safety_buffer_size: int = 128

    def __post_init__(self) -> None:
        if self.buffer_size < 0 or self.safety_buffer_size < 0:
            raise ConfigError("replay.buffer_size and replay.safety_buffer_size must be >= 0")


@dataclass
class ControllerConfig:
    name: str = "fixed:0.3"
    """Baseline name (no_replay, fixed:R, uniform, loss_prop[:R], exp3, multitask) or a controller directory."""
    current_floor: float = 0.0
    """Minimum share of the current task in every mixture (learned and bandit controllers)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.current_floor <= 1.0:
            raise ConfigError(f"controller.current_floor must be in [0, 1], got {self.current_floor}")


@dataclass
class RLConfig:
    """Learning the controller: PPO over whole continual runs (episodes) on the proxy (or the target, as oracle)."""

    updates: int = 8
    """PPO updates; each collects `episodes_per_update` fresh episodes."""
    episodes_per_update: int = 4
    workers: int = 2
    """Episodes run in parallel in a process pool (each worker uses one torch thread)."""
    pool: str = "process"
    """'process' (multiprocessing), 'ray' (ray.util.multiprocessing.Pool, same API), or 'serial'."""
    train_domains: list[str] = field(default_factory=lambda: ["sort", "max", "last", "add", "capital", "code"])
    """Domains episodes are drawn from. Held-out domains and the standard evaluation sequences are never used."""
    heldout_domains: list[str] = field(default_factory=lambda: ["reverse", "succ"])
    tasks_per_episode: int = 4
    """Each episode trains a random ordered subset of this many training domains (after safety)."""
    episode_seed_offset: int = 1000
    """Episode k of update u uses seed offset + u * episodes_per_update + k: disjoint from evaluation seeds."""
    episode_seeds: int = 0
    """If > 0, cycle through only this many episode seeds (common random numbers: less reward variance from
    data and init, more from the policy's own choices). 0 = a fresh seed for every episode."""
    group_size: int = 1
    """Episodes per scenario. > 1: each update runs episodes_per_update / group_size scenarios (task order and
    seed), each group_size times with different exploration noise, and the policy gradient uses group-relative
    advantages (an episode's return minus its group's mean, over the group's std; GRPO, Shao et al. 2024,
    arXiv 2402.03300) instead of GAE: within a group, task order and seed cancel and what differs is the policy's
    own choices. 1 = independent episodes with GAE."""
    hidden: int = 32
    lr: float = 3e-3
    epochs: int = 4
    minibatch_size: int = 32
    clip_coef: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    gamma: float = 1.0
    gae_lambda: float = 0.95
    init_log_std: float = -0.5
    lambda_acc: float = 1.0
    """Terminal reward = (lambda_acc * avg_accuracy - lambda_f * forgetting + lambda_s * safety) / 100
    - lambda_loss * loss_forgetting."""
    lambda_f: float = 1.0
    lambda_s: float = 1.0
    lambda_loss: float = 0.0
    """Weight of a dense terminal term: - mean over earlier tasks of (final val loss / loss right after training
    it - 1). Loss moves smoothly where accuracy is quantised (tiny models, short runs)."""
    shaping_coef: float = 0.1
    """Potential-based shaping per decision: coef * (phi(s') - phi(s)), phi = -mean normalised buffer loss
    (Ng et al. 1999: leaves the optimal policy unchanged)."""

    def __post_init__(self) -> None:
        if self.pool not in ("process", "ray", "serial"):
            raise ConfigError(f"rl.pool must be process, ray or serial, got {self.pool!r}")
        overlap = set(self.train_domains) & set(self.heldout_domains)
        if overlap:
            raise ConfigError(f"rl.train_domains and rl.heldout_domains overlap: {sorted(overlap)}")
        if self.tasks_per_episode > len(self.train_domains):
            raise ConfigError(f"rl.tasks_per_episode ({self.tasks_per_episode}) exceeds rl.train_domains")
        _require_positive(self, "rl", ("updates", "episodes_per_update", "workers", "epochs", "minibatch_size",
                                       "tasks_per_episode", "group_size"))
        if self.episodes_per_update % self.group_size:
            raise ConfigError(f"rl.episodes_per_update ({self.episodes_per_update}) must be a multiple of "
                              f"rl.group_size ({self.group_size})")


@dataclass
class RunConfig:
    seed: int = 0
    """One seed for data generation, splits, init, sampling and RL."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    """Used only by `proxymix train-controller`."""


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _build(cls: type, raw: Any, where: str) -> Any:
    """Recursively turn a mapping into dataclass `cls`, rejecting unknown keys with a suggestion."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(names))})"
            raise ConfigError(f"unknown config key '{path}'{hint}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, path)
        else:
            kwargs[key] = _coerce(value, hint, path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Light type check: ints where ints are expected, floats accept ints, strings stay strings."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    if value is None and type(None) in options:
        return None
    for opt in options:
        base = typing.get_origin(opt) or opt
        if base is bool and isinstance(value, bool):
            return value
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is float and isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept any float literal
            try:
                return float(value)
            except ValueError:
                pass
        if base is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value) if not isinstance(value, str) else value
        if base in (list, dict) and isinstance(value, base):
            return value
    raise ConfigError(f"config key '{path}' expects {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (value parsed as YAML) to a raw config mapping, returning a new mapping."""
    out = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value")
        key, text = item.split("=", 1)
        value = yaml.safe_load(text) if text else None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Load a YAML file (or the defaults when path is None), apply dotted overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    raw = apply_overrides(raw, list(overrides))
    try:
        return _build(RunConfig, raw, "")
    except ConfigError as exc:
        prefix = f"{path}: " if path is not None else ""
        raise ConfigError(f"{prefix}{exc}") from None


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """A validated RunConfig from a plain mapping (e.g. one saved by an earlier version: keys added since get
    their defaults)."""
    return _build(RunConfig, raw, "")


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
