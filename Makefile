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
EXAMPLE := examples/ocr

.PHONY: serve test check env

$(VENV)/.ok: setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[onnx,test,dev,ray]'
	touch $@

# Pretrained weights for examples/ocr and examples/vad-torch, shipped in these wheels. Without
# their dependencies (OpenCV, torchaudio...): the examples use numpy, Pillow, onnxruntime and
# torch only; the wheels are where the weights come from (any Python the runtime supports).
$(VENV)/.weights: $(VENV)/.ok
	$(PIP) install -q --no-deps --ignore-requires-python rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3
	touch $@

env: $(VENV)/.ok $(VENV)/.weights

serve: $(VENV)/.ok $(VENV)/.weights
	cd $(EXAMPLE) && ../../$(PY) make_model.py
	@echo
	@echo "Serving $(EXAMPLE) on http://127.0.0.1:25252 (Ctrl-C stops it). In another shell:"
	@echo "  curl -s -X POST -H 'Content-Type: image/png' --data-binary @$(EXAMPLE)/sample.png http://127.0.0.1:25252/"
	@echo "  open http://127.0.0.1:25252/ in a browser for the try-it page"
	@echo
	$(VENV)/bin/openbayes-serving run $(EXAMPLE) --host 127.0.0.1 --port 25252

# The browser tests drive Debian's chromium through Playwright (never `playwright install`).
/usr/bin/chromium:
	apt-get update -qq && apt-get install -y -qq chromium

# The example tests draw text in Debian's fonts and make speech with espeak-ng.
FONTS := /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
$(FONTS):
	apt-get update -qq && apt-get install -y -qq fonts-dejavu-core fonts-wqy-microhei

/usr/bin/espeak-ng:
	apt-get update -qq && apt-get install -y -qq espeak-ng

# Two passes: most tests on 4 workers (they mostly wait on servers; one file stays on one
# worker, for its module-scoped fixtures), then the timed tests alone (tests/conftest.py SERIAL).
test: $(VENV)/.ok $(VENV)/.weights /usr/bin/chromium $(FONTS) /usr/bin/espeak-ng
	$(PY) -m pytest -q -n 4 --dist loadfile --no-loadscope-reorder -m "not serial"
	$(PY) -m pytest -q -n 2 --maxschedchunk 1 -m "serial and not alone"
	$(PY) -m pytest -q -m alone

check: $(VENV)/.ok
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
