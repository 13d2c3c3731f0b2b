"""Load tasks from local files: JSONL in three auto-detected formats, or a `datasets.save_to_disk` directory.

Formats, detected per line:
- ``{"prompt": ..., "completion": ...}``
- ``{"instruction": ..., "input": ..., "output": ...}`` (Alpaca; the prompt is instruction + input)
- ``{"messages": [{"role": ..., "content": ...}, ...]}`` (chat; the last assistant turn is the target and
  everything before it, rendered as ``role: content`` lines, is the prompt)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from proxymix.data.tasks import Example, Task


class DataError(ValueError):
    """Malformed input data; the message names the file and line."""


def _from_record(rec: object, where: str) -> Example:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if "prompt" in rec and "completion" in rec:
        prompt, completion = rec["prompt"], rec["completion"]
    elif "instruction" in rec and "output" in rec:
        extra = rec.get("input") or ""
        prompt = f"{rec['instruction']}\n{extra}".strip() if extra else rec["instruction"]
        completion = rec["output"]
    elif "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            raise DataError(f"{where}: 'messages' must be a list of {{role, content}} objects")
        last = max((k for k, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None:
            raise DataError(f"{where}: 'messages' has no assistant turn to use as the target")
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in msgs[:last])
        completion = msgs[last]["content"]
    else:
        raise DataError(
            f"{where}: unrecognised record with keys {sorted(rec)}; expected prompt/completion, "
            "instruction/input/output or messages"
        )
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise DataError(f"{where}: prompt and completion must be strings")
    if not completion.strip():
        raise DataError(f"{where}: empty completion")
    return Example(prompt=prompt, completion=completion, kind=str(rec.get("kind", "")))


def read_jsonl(path: str | Path) -> list[Example]:
    """Read a JSONL file; a malformed line raises `DataError` naming file and line."""
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: invalid JSON ({exc.msg})") from None
            out.append(_from_record(rec, where))
    if not out:
        raise DataError(f"{path}: no examples")
    return out


def read_hf_dataset(path: str | Path) -> dict[str, list[Example]]:
    """Read a directory written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    import datasets

    path = Path(path)
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for a bad directory
        raise DataError(f"{path}: not a dataset saved with datasets.save_to_disk ({exc})") from None
    splits = dict(ds) if isinstance(ds, datasets.DatasetDict) else {"all": ds}
    return {
        name: [_from_record(rec, f"{path}[{name}][{k}]") for k, rec in enumerate(split)]
        for name, split in splits.items()
    }


def load_task(name: str, path: str | Path, n_val: int, n_test: int, seed: int) -> Task:
    """Load one task from a JSONL file or dataset directory, splitting deterministically from `seed`.

    A dataset directory with train/validation/test splits keeps them; anything else is shuffled with the seed
    and cut into test (n_test), val (n_val) and train (the rest).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"task {name!r}: file not found: {path}")
    if path.is_dir():
        splits = read_hf_dataset(path)
        if {"train", "validation", "test"} <= set(splits):
            return Task(name, splits["train"], splits["validation"], splits["test"])
        examples = [e for split in splits.values() for e in split]
    else:
        examples = read_jsonl(path)
    if len(examples) < n_val + n_test + 1:
        raise DataError(f"{path}: {len(examples)} examples, need more than n_val + n_test = {n_val + n_test}")
    rng = random.Random(f"{seed}:{name}")
    examples = list(examples)
    rng.shuffle(examples)
    return Task(name, train=examples[n_val + n_test:], val=examples[n_test:n_test + n_val], test=examples[:n_test])
