# DeepVis: `make run` opens the app on the default model; `make test` runs the whole suite.
# Both create .venv and install the project on first use (pip takes torch from this machine's local files).

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Another torch than the pinned build only when asked for: `make setup TORCH_FALLBACK=1` (then a warning).
TORCH_FALLBACK ?= 0
export TORCH_FALLBACK
# Qt's xcb platform plugin needs these for a real window; xvfb gives a virtual screen on headless machines.
QT_LIBS := libxcb-cursor0 libxcb-icccm4 libxkbcommon-x11-0 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
           libxcb-xinerama0 libxcb-randr0 libxcb-shape0 libegl1 libgl1 libfontconfig1 libdbus-1-3

.PHONY: run test setup syslibs browser lint bench demo clean versions wheel-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# The pinned local torch build; the declared range only with TORCH_FALLBACK=1, never silently.
	@$(BIN)/pip install -q $(TORCH_PINS) || { \
	  if [ "$(TORCH_FALLBACK)" = 1 ]; then \
	    echo "WARNING: pinned $(TORCH_PINS) not installable; TORCH_FALLBACK=1: using the declared range"; \
	    $(BIN)/pip install -q "torch>=2.4" "torchvision>=0.19"; \
	  else \
	    echo "error: pinned $(TORCH_PINS) not installable here; rerun with TORCH_FALLBACK=1 to accept another build"; \
	    exit 1; \
	  fi; }
	$(BIN)/pip install -q -e '.[dev,models,explain]'
	@touch $(STAMP)

# Install Qt's system libraries (and xvfb) when missing and we can; otherwise say what to install.
syslibs:
	@missing=""; for p in $(QT_LIBS) xvfb; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing system libraries for Qt:$$missing"; \
	    (apt-get install -y -q $$missing >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && \
	      apt-get install -y -q $$missing >/dev/null 2>&1)) || echo "could not install:$$missing"; \
	  elif command -v apt-get >/dev/null; then \
	    echo "Qt needs system libraries; install them with: sudo apt-get install$$missing"; \
	  fi; \
	fi

# Debian's chromium for the atlas's browser test (tests/test_atlas.py drives it with playwright; playwright never
# downloads a browser here). Installed when missing and we are root; otherwise the test skips and says so.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium for the browser test"; \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && \
	      apt-get install -y -q chromium >/dev/null 2>&1)) || echo "could not install chromium"; \
	  elif command -v apt-get >/dev/null; then \
	    echo "the atlas browser test needs chromium: sudo apt-get install chromium"; \
	  fi; \
	fi

# Opens the window on the default model; the demo source when there is no camera. Without a display,
# it runs under xvfb-run (a virtual screen) so the app still starts.
run: setup syslibs
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ] || ! command -v xvfb-run >/dev/null; then \
	  $(BIN)/deepvis $(ARGS); \
	else \
	  echo "no display: running under xvfb-run (set DISPLAY to see the window)"; \
	  xvfb-run -a -s "-screen 0 1600x1000x24" $(BIN)/deepvis $(ARGS); \
	fi

test: setup versions browser
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q $(PYTEST_ARGS)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	scripts/check_wheel.sh

# The torch/torchvision that tests run on; fails when they are not the pinned build (unless TORCH_FALLBACK=1).
versions: setup
	@$(BIN)/python scripts/check_torch.py $(TORCH_PINS)

# Build the wheel, install it into a fresh venv and run the installed `deepvis` outside the source tree.
wheel-check: setup
	scripts/check_wheel.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build
