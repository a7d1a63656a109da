# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

# huggingface_hub client venvs for tests/test_hub_conformance.py (the 2.x client is the main venv's);
# only huggingface_hub (+ its hf_xet) in each, a few seconds to install. A failed install leaves
# no venv behind, and the tests of that client skip, saying so.
HUB_CLIENTS ?= 0.36:huggingface_hub~=0.36.0 1:huggingface_hub~=1.0

# The oldest diffusers pyproject.toml declares (its `diffusers>=` floor), for
# tests/test_loader_conformance.py: a venv inside $(VENV) with only that diffusers and the
# transformers / huggingface_hub / tokenizers it works with; torch, peft and loradex come from
# $(VENV) through a .pth file. Rebuilt when pyproject.toml changes; a failed install leaves no
# venv behind and those tests skip, saying so.
OLDEST_DIFFUSERS := $(VENV)/oldest-diffusers
OLDEST_DIFFUSERS_PINS ?= transformers==4.57.6 huggingface_hub==0.36.2 tokenizers==0.22.2

.PHONY: setup demo test bench clean hub-clients oldest-diffusers browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

setup: $(BIN)/python
	@# The CPU torch wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[test]"

demo: setup
	$(BIN)/loradex demo

hub-clients:
	@for spec in $(HUB_CLIENTS); do \
	  dir=.venv-hub/$${spec%%:*}; req=$${spec#*:}; \
	  [ -x $$dir/bin/hf ] && continue; \
	  echo "== $$dir ($$req)"; \
	  ( $(PYTHON) -m venv $$dir && $$dir/bin/python -m pip install -q "$$req" ) \
	    || { rm -rf $$dir; echo "warning: could not build $$dir; its client tests will skip"; }; \
	done

oldest-diffusers: $(OLDEST_DIFFUSERS)/.built

$(OLDEST_DIFFUSERS)/.built: pyproject.toml | setup
	@rm -rf $(OLDEST_DIFFUSERS); \
	floor=$$(sed -n 's/.*"diffusers>=\([0-9.]*\)".*/\1/p' pyproject.toml); \
	echo "== $(OLDEST_DIFFUSERS) (diffusers==$$floor)"; \
	( $(BIN)/python -m venv --without-pip $(OLDEST_DIFFUSERS) \
	  && main=$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
	  && own=$$($(OLDEST_DIFFUSERS)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
	  && echo "import site; site.addsitedir('$$main')" > $$own/zz-loradex-main.pth \
	  && $(BIN)/python -m pip install -q --no-deps --target $$own "diffusers==$$floor" $(OLDEST_DIFFUSERS_PINS) \
	  && touch $@ ) \
	  || { rm -rf $(OLDEST_DIFFUSERS); echo "warning: could not build $(OLDEST_DIFFUSERS); its tests will skip"; }

# The web app's end-to-end tests drive the distribution's Chromium through its chromedriver
# (Debian packages chromium + chromium-driver; no browser download). Installed with apt-get where
# missing and possible (root); otherwise those tests skip, saying what to install.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "== chromium + chromium-driver (apt-get)"; \
	  ( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null ) \
	    || echo "warning: could not install chromium; the browser tests will skip"; \
	else echo "warning: no chromium/chromedriver and no root apt-get; the browser tests will skip"; fi

test: setup hub-clients oldest-diffusers browser
	$(BIN)/pytest -q -n 2 --dist loadfile   # two workers (2-core CI): a module stays on one worker, its fixtures shared

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-hub build *.egg-info .pytest_cache
