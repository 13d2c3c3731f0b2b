VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned in pyproject.toml; install that exact version first so nothing pulls a CUDA build.
TORCH_PIN := $(shell grep -o '"torch==[0-9.]*"' pyproject.toml | tr -d '"')

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/proxymix demo

test: setup
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
