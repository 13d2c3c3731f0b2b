"""Tasks, loaders, the built-in suite and the tokenizer."""

from proxymix.data.tasks import SCORERS, Example, Task

__all__ = ["SCORERS", "Example", "Task"]
