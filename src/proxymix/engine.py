"""The one continual training loop.

    for phase in [safety, task_1, ..., task_T]:
        for step in phase:
            every `decision_interval` steps: val losses of seen slots -> Observation -> controller -> weights
            batch <- MixtureSampler(weights) over {current task, safety buffer, replay buffers}
            optimizer step (length-aware micro-batches, completion-only loss)
        add the task to its replay buffer; evaluate every task -> one row of R

The loop is a generator (`ContinualRun.decisions`) that yields an `Observation` at every decision and receives the
weights back, so the same code serves a plain run (`run_continual`, which asks a `Controller`) and the RL
environment (which lets the agent answer). All state lives in `state_dict()`-able components.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from proxymix import metrics
from proxymix.config import ConfigError, RunConfig
from proxymix.controllers.base import CURRENT, REPLAY, SAFETY, Controller, Observation, apply_floor, check_weights
from proxymix.data.suite import SAFETY as SAFETY_TASK
from proxymix.data.suite import builtin_suite, make_safety, resolve_sequence
from proxymix.data.tasks import Task
from proxymix.data.tokenize import Encoded, encode, load_tokenizer, suite_texts, train_bpe
from proxymix.evaluation import mean_losses, score_task, token_loss
from proxymix.models import build_model, count_params, eval_flops, train_flops
from proxymix.replay import MixtureSampler, ReservoirBuffer, collate, plan_microbatches

# Cost of one extra forward call, in padded-token equivalents, when splitting a batch into micro-batches.
MICROBATCH_OVERHEAD_TOKENS = 96


def load_tasks(cfg: RunConfig) -> tuple[dict[str, Task], list[str]]:
    """All tasks of the run (safety first when enabled) and the domain sequence."""
    d = cfg.data
    if d.suite == "builtin":
        suite = builtin_suite(cfg.seed, d.n_train, d.n_val, d.n_test)
        sequence = _sequence(d.sequence)
        unknown = [t for t in sequence if t not in suite or t == SAFETY_TASK]
        if unknown:
            raise ConfigError(f"data.sequence: unknown task(s) {unknown} (built-in: {', '.join(list(suite)[1:])})")
    else:
        from proxymix.data.loaders import load_task

        suite = {name: load_task(name, path, d.n_val, d.n_test, cfg.seed) for name, path in d.tasks.items()}
        sequence = list(d.tasks) if isinstance(d.sequence, str) else _sequence(d.sequence)
        unknown = [t for t in sequence if t not in suite]
        if unknown:
            raise ConfigError(f"data.sequence: task(s) {unknown} not in data.tasks ({', '.join(suite)})")
        if cfg.data.safety:
            suite = {SAFETY_TASK: make_safety(cfg.seed, d.n_val, d.n_test), **suite}
    tasks = {SAFETY_TASK: suite[SAFETY_TASK]} if d.safety else {}
    tasks.update({name: suite[name] for name in sequence})
    return tasks, sequence


def _sequence(sequence: list[str] | str) -> list[str]:
    try:
        return resolve_sequence(sequence)
    except KeyError as exc:
        raise ConfigError(f"data.sequence: {exc.args[0]}") from None


@dataclass
class RunResult:
    tasks: list[str]
    """Column order of R_full: safety (if enabled) then the domain sequence."""
    sequence: list[str]
    R_full: np.ndarray
    """R_full[t, i]: score (points) on task i after phase t; row 0 before any training."""
    L_full: np.ndarray
    """Validation loss on task i after phase t (same layout): the raw material of vulnerability probes."""
    safety: list[float]
    """Refusal rate on held-out harmful prompts after each phase (row-aligned with R_full)."""
    over_refusal: list[float]
    mixture: list[dict]
    """One record per decision: step, phase, task, weights over every slot column, val losses."""
    slot_columns: list[str]
    counters: dict
    wall_s: float
    controller: str
    metrics: dict = field(default_factory=dict)

    @property
    def R(self) -> np.ndarray:
        """The domain matrix the metrics use: rows from the aligned base (after safety) on, domain columns."""
        return self.R_full[1:, 1:] if self.tasks[0] == SAFETY_TASK else self.R_full


class ContinualRun:
    """Owns the model, optimizer, buffers, sampler and records of one continual run."""

    def __init__(self, cfg: RunConfig, tokenizer=None, tasks: dict[str, Task] | None = None,
                 sequence: list[str] | None = None, multitask: bool = False):
        self.cfg = cfg
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        torch.manual_seed(cfg.seed)
        if tasks is None:
            tasks, sequence = load_tasks(cfg)
        self.tasks, self.sequence, self.multitask = tasks, list(sequence), multitask
        if tokenizer is None:
            if cfg.data.tokenizer:
                tokenizer = load_tokenizer(cfg.data.tokenizer)
            elif cfg.model.path:
                tokenizer = load_tokenizer(cfg.model.path)
            else:
                # Trained on the whole built-in suite (not just this sequence) so runs share one vocabulary.
                corpus = builtin_suite(cfg.seed, cfg.data.n_train, cfg.data.n_val, cfg.data.n_test)
                corpus.update(tasks)
                tokenizer = train_bpe(suite_texts(corpus.values()), cfg.data.vocab_size)
        self.tok = tokenizer
        L = cfg.data.max_length
        self.enc = {n: {s: encode(tokenizer, getattr(t, s), L) for s in ("train", "val", "test")}
                    for n, t in tasks.items()}

        precision = cfg.train.precision
        want_cpu = cfg.train.device == "cpu" or (cfg.train.device == "auto" and not torch.cuda.is_available())
        if precision == "auto":
            precision = "fp32" if want_cpu else "bf16"
        self.accelerator = Accelerator(cpu=want_cpu, mixed_precision="bf16" if precision == "bf16" else "no")
        self.device = self.accelerator.device
        model = build_model(cfg.model, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, cfg.seed)
        self.model = self.accelerator.prepare(model)
        self.n_params = count_params(self.model)
        self.n_trainable = count_params(self.model, trainable_only=True)

        self.sampler = MixtureSampler(cfg.train.batch_size, seed=cfg.seed, streams=cfg.train.sampler_streams)
        self.buffer_rng = np.random.default_rng([cfg.seed, 1])
        self.buffers: dict[str, ReservoirBuffer] = {}
        self.counters = {"train_tokens": 0, "padded_tokens": 0, "eval_tokens": 0, "train_flops": 0.0,
                         "eval_flops": 0.0, "steps": 0, "train_s": 0.0, "eval_s": 0.0}
        self.R_rows: list[list[float]] = []
        self.L_rows: list[list[float]] = []
        self.safety_rows: list[float] = []
        self.over_refusal_rows: list[float] = []
        self.mixture: list[dict] = []
        self.phase = 0
        self.optimizer = None

    # ---------------------------------------------------------------- the loop
    def decisions(self) -> Generator[Observation, np.ndarray, RunResult]:
        """Run every phase; yield an Observation at each decision and expect slot weights back."""
        t0 = time.perf_counter()
        cfg = self.cfg.train
        self._evaluate_all()  # row 0: before any training
        phases = self._phases()
        for self.phase, (name, steps) in enumerate(phases):
            self._new_optimizer(steps)
            slots, sources = self._slots(name)
            histories: list[list[float]] = [[] for _ in slots]
            weights = self._default_weights(name, slots)
            bar = tqdm(range(steps), desc=f"phase {self.phase} {name}", disable=not cfg.progress, leave=False)
            for step in bar:
                if step % cfg.decision_interval == 0 and self._controlled(name):
                    obs = self._observe(slots, sources, histories, step / steps)
                    weights = yield obs
                    self._record(step, name, slots, weights, obs)
                self._train_step(weights, [sources[s] for s in slots], [self._stream_key(name, s) for s in slots])
            if name in self.tasks and self.cfg.replay.buffer_size + self.cfg.replay.safety_buffer_size > 0:
                cap = self.cfg.replay.safety_buffer_size if name == SAFETY_TASK else self.cfg.replay.buffer_size
                buf = self.buffers.setdefault(name, ReservoirBuffer(cap))
                buf.add([self.enc[name]["train"][k] for k in self.buffer_rng.permutation(len(self.enc[name]["train"]))],
                        self.buffer_rng)
            self._evaluate_all(repeat=len(self.tasks) if self.multitask else 1)
        self.counters["wall_s"] = time.perf_counter() - t0
        return self._result()

    def _phases(self) -> list[tuple[str, int]]:
        cfg = self.cfg.train
        if self.multitask:
            total = (cfg.safety_steps if SAFETY_TASK in self.tasks else 0) + cfg.steps_per_task * len(self.sequence)
            return [("multitask", total)]
        out = [(SAFETY_TASK, cfg.safety_steps)] if SAFETY_TASK in self.tasks else []
        return out + [(name, cfg.steps_per_task) for name in self.sequence]

    def _controlled(self, name: str) -> bool:
        return name in self.sequence and not self.multitask

    def _slots(self, name: str) -> tuple[list[str], dict]:
        """Slot ids and their example sources for the phase training `name` (only tasks seen so far)."""
        if self.multitask:
            return list(self.tasks), {n: self.enc[n]["train"] for n in self.tasks}
        slots, sources = [CURRENT], {CURRENT: self.enc[name]["train"]}
        if name == SAFETY_TASK:
            return slots, sources
        if SAFETY_TASK in self.tasks:
            slots.append(SAFETY)
            sources[SAFETY] = self.buffers.get(SAFETY_TASK, ReservoirBuffer(0))
        for prev in self.sequence[: self.sequence.index(name)]:
            slot = f"{REPLAY}:{prev}"
            slots.append(slot)
            sources[slot] = self.buffers.get(prev, ReservoirBuffer(0))
        return slots, sources

    def _default_weights(self, name: str, slots: list[str]) -> np.ndarray:
        if self.multitask:
            return np.full(len(slots), 1.0 / len(slots))
        w = np.zeros(len(slots))
        w[0] = 1.0
        return w

    def slot_task(self, slot: str) -> str:
        if slot == CURRENT:
            return self.sequence[self.phase - (1 if SAFETY_TASK in self.tasks else 0)]
        return SAFETY_TASK if slot == SAFETY else slot.split(":", 1)[1]

    def _observe(self, slots, sources, histories, progress: float) -> Observation:
        """Validation losses of every seen slot (one batched forward per slot), appended to their histories."""
        t0 = time.perf_counter()
        n = self.cfg.train.val_examples
        groups = [self.enc[self.slot_task(s)]["val"][:n] for s in slots]
        losses = mean_losses(self.model, groups, self.tok.pad_token_id, self.device)
        self._count_eval(sum(len(e.ids) for g in groups for e in g))
        self.counters["eval_s"] += time.perf_counter() - t0
        for h, loss in zip(histories, losses):
            h.append(loss)
        kinds = tuple(s.split(":")[0] for s in slots)
        seen = self.sequence.index(self.slot_task(CURRENT)) + 1
        return Observation(
            slots=tuple(slots), kinds=kinds, mask=tuple(len(sources[s]) > 0 for s in slots),
            history=tuple(tuple(h) for h in histories), ref_loss=tuple(h[0] for h in histories),
            phase_progress=progress, n_seen=seen)

    def _record(self, step, name, slots, weights, obs) -> None:
        row = {"step": self.counters["steps"], "phase": self.phase, "phase_step": step, "task": name}
        row.update({f"w:{c}": 0.0 for c in self.slot_columns})
        row.update({f"w:{s}": float(w) for s, w in zip(slots, weights)})
        row.update({f"loss:{s}": float(v) for s, v in zip(slots, obs.loss)})
        self.mixture.append(row)

    @property
    def slot_columns(self) -> list[str]:
        cols = [CURRENT] + ([SAFETY] if SAFETY_TASK in self.tasks else [])
        return cols + [f"{REPLAY}:{t}" for t in self.sequence[:-1]]

    # ------------------------------------------------------------ training
    def _new_optimizer(self, steps: int) -> None:
        """Each phase is a new fine-tuning job: fresh AdamW state and a linear warm-up, then constant LR."""
        cfg = self.cfg.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(1, min(cfg.warmup_steps, steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        self.optimizer, self.scheduler = self.accelerator.prepare(opt, sched)

    @staticmethod
    def _stream_key(phase_name: str, slot: str) -> str:
        """The sampler stream of a source: the current task's training split, or the slot itself (a buffer, or a
        task's training split in a multitask run, where slots are task names)."""
        return f"train:{phase_name}" if slot == CURRENT else slot

    def _train_step(self, weights: np.ndarray, sources: list, keys: list[str]) -> float:
        t0 = time.perf_counter()
        examples = self.sampler.sample(weights, sources, keys)
        n_target = sum(e.n_target for e in examples)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        groups = (plan_microbatches([len(e.ids) for e in examples], MICROBATCH_OVERHEAD_TOKENS)
                  if self.cfg.train.length_aware else [list(range(len(examples)))])
        for group in groups:
            mb = [examples[k] for k in group]
            batch = {k: v.to(self.device) for k, v in collate(mb, self.tok.pad_token_id).items()}
            with self.accelerator.autocast():
                loss_sum, _ = token_loss(self.model, batch)
            # Token-level mean over the whole batch: each micro-batch contributes its sum / batch target count.
            loss = loss_sum.sum() / n_target
            self.accelerator.backward(loss)
            total += float(loss.detach())
            self.counters["padded_tokens"] += batch["input_ids"].numel()
        if self.cfg.train.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        real = sum(len(e.ids) for e in examples)
        self.counters["train_tokens"] += real
        self.counters["train_flops"] += train_flops(self.n_params, real)
        self.counters["steps"] += 1
        self.counters["train_s"] += time.perf_counter() - t0
        return total

    # ---------------------------------------------------------- evaluation
    def _count_eval(self, tokens: int) -> None:
        self.counters["eval_tokens"] += tokens
        self.counters["eval_flops"] += eval_flops(self.n_params, tokens)

    def _evaluate_all(self, repeat: int = 1) -> None:
        """One row of R (greedy generation + scorer on every task's test split) and of the loss matrix."""
        t0 = time.perf_counter()
        row, lrow = [], []
        for name, task in self.tasks.items():
            enc = self.enc[name]["test"]
            res = score_task(self.model, self.tok, task, enc, self.device)
            # prompt + at most (target length + 1) generated tokens per example
            self._count_eval(sum(e.n_prompt + e.n_target + 1 for e in enc))
            row.append(res.score)
            if task.is_safety:
                self.safety_rows += [res.refusal_harmful] * repeat
                self.over_refusal_rows += [res.refusal_benign] * repeat
        val = [self.enc[n]["val"][: self.cfg.train.val_examples] for n in self.tasks]
        lrow = mean_losses(self.model, val, self.tok.pad_token_id, self.device)
        self._count_eval(sum(len(e.ids) for g in val for e in g))
        self.R_rows += [row] * repeat
        self.L_rows += [lrow] * repeat
        self.counters["eval_s"] += time.perf_counter() - t0

    def _result(self) -> RunResult:
        res = RunResult(
            tasks=list(self.tasks), sequence=list(self.sequence), R_full=np.array(self.R_rows),
            L_full=np.array(self.L_rows), safety=self.safety_rows, over_refusal=self.over_refusal_rows,
            mixture=self.mixture, slot_columns=self.slot_columns, counters=dict(self.counters),
            wall_s=self.counters.get("wall_s", 0.0), controller="")
        res.metrics = summarize(res, self)
        return res

    # ---------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything needed to resume: model/adapters, optimizer, scheduler, buffers, sampler RNG, records."""
        return {
            "model": self.accelerator.unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.optimizer else None,
            "buffers": {k: b.state_dict() for k, b in self.buffers.items()},
            "buffer_rng": self.buffer_rng.bit_generator.state,
            "sampler": self.sampler.state_dict(),
            "phase": self.phase, "counters": dict(self.counters),
            "R_rows": list(self.R_rows), "L_rows": list(self.L_rows), "safety_rows": list(self.safety_rows),
            "over_refusal_rows": list(self.over_refusal_rows), "mixture": list(self.mixture),
        }


def summarize(res: RunResult, run: ContinualRun) -> dict:
    """Every metric convention from the stored R, plus safety, cost and throughput; namespaced keys."""
    m = {f"cl/{k}": v for k, v in metrics.summarize(res.R).items()}
    per_task = metrics.forgetting_per_task(res.R)
    for name, f in zip(res.sequence[:-1], per_task):
        m[f"cl/forgetting/{name}"] = float(f)
    for name, s in zip(res.tasks, res.R_full[-1]):
        m[f"cl/final/{name}"] = float(s)
    if res.safety:
        m["safety/score"] = float(res.safety[-1])
        m["safety/over_refusal"] = float(res.over_refusal[-1])
        m["safety/base_score"] = float(res.safety[1 if len(res.safety) > 1 else 0])
        m["safety/erosion"] = m["safety/base_score"] - m["safety/score"]
    c = res.counters
    replay = [1.0 - r["w:current"] for r in res.mixture]
    m["mix/mean_replay_share"] = float(np.mean(replay)) if replay else 0.0
    m["cost/n_params"] = run.n_params
    m["cost/train_flops"] = c["train_flops"]
    m["cost/eval_flops"] = c["eval_flops"]
    m["perf/train_tokens_per_s"] = c["train_tokens"] / c["train_s"] if c["train_s"] else math.nan
    m["perf/padding_fraction"] = 1.0 - c["train_tokens"] / c["padded_tokens"] if c["padded_tokens"] else 0.0
    return m


def run_continual(cfg: RunConfig, controller: Controller | None, tokenizer=None, tasks=None, sequence=None,
                  multitask: bool = False) -> tuple[RunResult, ContinualRun]:
    """Drive a whole run with `controller` (None for the multitask reference)."""
    run = ContinualRun(cfg, tokenizer, tasks, sequence, multitask=multitask)
    if controller is not None:
        controller.reset()
    loop = run.decisions()
    try:
        obs = next(loop)
        while True:
            w = check_weights(controller.act(obs), obs)
            obs = loop.send(apply_floor(w, obs, cfg.controller.current_floor))
    except StopIteration as stop:
        result = stop.value
    result.controller = "multitask" if multitask else controller.name
    return result, run
