"""Losses and scores: the one completion-only loss, batched validation losses, greedy generation + scorers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from proxymix.data.tasks import Task, is_refusal
from proxymix.data.tokenize import Encoded
from proxymix.replay import collate


def token_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example summed next-token cross-entropy over target tokens, and the target-token counts.

    This is the only place the loss is computed: training divides the batch sum by the batch's target-token
    count (token-level mean, as TRL), validation divides per task.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    ce = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                         reduction="none").view_as(labels)
    mask = labels != -100
    return (ce * mask).sum(1), mask.sum(1)


@torch.no_grad()
def mean_losses(model, groups: Sequence[Sequence[Encoded]], pad_id: int, device) -> list[float]:
    """Mean per-token loss of each group of examples (e.g. one group per slot), batched by group."""
    was_training = model.training
    model.eval()
    out = []
    for group in groups:
        batch = {k: v.to(device) for k, v in collate(group, pad_id).items()}
        loss, n = token_loss(model, batch)
        out.append(float(loss.sum() / n.sum().clamp(min=1)))
    model.train(was_training)
    return out


@torch.no_grad()
def greedy_generate(model, encoded: Sequence[Encoded], eos_id: int, pad_id: int, max_new_tokens: int,
                    device, batch_size: int = 256) -> list[list[int]]:
    """Greedy completions for the prompts of `encoded` (their first `n_prompt` tokens).

    Prompts are grouped by exact length, so no padding is ever fed to the model: positions are right for every
    architecture (some compute position ids from the attention mask under left padding, some do not).
    """
    was_training = model.training
    model.eval()
    by_len: dict[int, list[int]] = defaultdict(list)
    for k, e in enumerate(encoded):
        by_len[e.n_prompt].append(k)
    out: list[list[int]] = [[] for _ in encoded]
    for _, idx in sorted(by_len.items()):
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            ids = torch.tensor([encoded[k].ids[: encoded[k].n_prompt] for k in chunk], device=device)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=eos_id, pad_token_id=pad_id)
            for k, row in zip(chunk, gen[:, ids.shape[1]:].tolist()):
                out[k] = row[: row.index(eos_id)] if eos_id in row else row
    model.train(was_training)
    return out


@dataclass
class TaskScore:
    score: float
    """Mean scorer value in points (0-100)."""
    refusal_harmful: float | None = None
    """Safety task only: refusal rate on harmful prompts (the safety score), points."""
    refusal_benign: float | None = None
    """Safety task only: refusal rate on benign look-alikes (over-refusal), points."""
    predictions: list[str] | None = None


def score_task(model, tok, task: Task, encoded_test: Sequence[Encoded], device, keep_predictions: bool = False,
               ) -> TaskScore:
    """Greedy-generate on the test split and score with the task's scorer."""
    max_new = max(e.n_target for e in encoded_test) + 1
    gen = greedy_generate(model, encoded_test, tok.eos_token_id, tok.pad_token_id, max_new, device)
    preds = tok.batch_decode(gen, skip_special_tokens=True)
    scores = [task.score(p, ex.completion) for p, ex in zip(preds, task.test)]
    result = TaskScore(100.0 * sum(scores) / len(scores), predictions=preds if keep_predictions else None)
    if task.is_safety:
        def rate(kind: str) -> float | None:
            flags = [is_refusal(p) for p, ex in zip(preds, task.test) if ex.kind == kind]
            return 100.0 * sum(flags) / len(flags) if flags else None

        result.refusal_harmful, result.refusal_benign = rate("harmful"), rate("benign")
    return result
