"""Tokenizer (a BPE trained locally, or one loaded from a directory) and completion-only encoding."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from proxymix.data.tasks import Example, Task

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-free BPE with a Metaspace pre-tokenizer (lossless round trip of spaces) on `texts`.

    Training is deterministic for the same texts in the same order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def suite_texts(tasks: Iterable[Task]) -> list[str]:
    """All prompt and completion strings of every split, in a fixed order (the tokenizer's training corpus)."""
    out = []
    for task in tasks:
        for split in (task.train, task.val, task.test):
            for ex in split:
                out += [ex.prompt, ex.completion]
    return out


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with `save_pretrained` (a run directory's, or a local model's)."""
    from proxymix.config import ConfigError

    path = Path(path)
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise ConfigError(f"{path}: no tokenizer.json or tokenizer_config.json (expected a saved tokenizer)")
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        # Common for causal LM tokenizers: pad with EOS; padded positions are masked out anyway.
        tok.pad_token = tok.eos_token
    return tok


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example; `n_prompt` leading tokens are excluded from the loss."""

    ids: tuple[int, ...]
    n_prompt: int

    @property
    def n_target(self) -> int:
        return len(self.ids) - self.n_prompt


def encode(tok: PreTrainedTokenizerFast, examples: list[Example], max_length: int) -> list[Encoded]:
    """Encode prompt and completion separately (so the boundary is exact) and append EOS to the completion.

    If the whole is longer than `max_length`, the prompt is cut from the left: the completion is what we score.
    """
    prompts = tok([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    comps = tok([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    out = []
    for p, c in zip(prompts, comps):
        c = list(c) + [tok.eos_token_id]
        keep = max(1, max_length - len(c))
        p = list(p)[-keep:]
        out.append(Encoded(tuple(p + c), len(p)))
    return out
