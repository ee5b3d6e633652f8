# The two set-up commands of the README, and the checks CI runs.
#   make serve   build the environment, make the example's model, serve it on :25252
#   make test    build the environment, run every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
ARCH := $(shell uname -m)
# The CPU/CUDA builds that install on this kind of machine (see README, "Installing").
ifeq ($(ARCH),aarch64)
TORCH := torch==2.9.1 torchvision==0.24.1
else
TORCH := torch==2.14.1 torchvision==0.29.1
endif
EXAMPLE := examples/image-classifier-onnx

.PHONY: serve test check env

$(VENV)/.ok: setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[onnx,test,dev,ray]'
	touch $@

env: $(VENV)/.ok

serve: $(VENV)/.ok
	cd $(EXAMPLE) && ../../$(PY) make_model.py
	@echo
	@echo "Serving $(EXAMPLE) on http://127.0.0.1:25252 (Ctrl-C stops it). In another shell:"
	@echo "  curl -s -X POST -H 'Content-Type: image/jpeg' --data-binary @$(EXAMPLE)/sample.jpg http://127.0.0.1:25252/"
	@echo "  open http://127.0.0.1:25252/ in a browser for the try-it page"
	@echo
	$(VENV)/bin/openbayes-serving run $(EXAMPLE) --host 127.0.0.1 --port 25252

# The browser tests drive Debian's chromium through Playwright (never `playwright install`).
/usr/bin/chromium:
	apt-get update -qq && apt-get install -y -qq chromium

test: $(VENV)/.ok /usr/bin/chromium
	$(PY) -m pytest -q

check: $(VENV)/.ok
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
