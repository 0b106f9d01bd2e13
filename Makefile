# Two commands on a fresh machine (Python 3.11):
#   make demo   install, then generate 32 crystals with the bundled model (CIFs + a PNG grid in out/demo)
#   make test   install, then run the test suite (fetches the source CSVs, builds the data caches once)
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
NUM    ?= 32
STEPS  ?=

.PHONY: install demo test browser sources clean-cache

# constraints.txt pins the exact versions the tests ran with; pyproject.toml keeps lower bounds.
$(VENV)/.installed: pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -c constraints.txt setuptools wheel torch
	$(PY) -m pip install -c constraints.txt -e ".[all,test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/mattergen-kit generate --num $(NUM) --out out/demo --seed 0 --overwrite $(if $(STEPS),--steps $(STEPS),)

# The browser test (tests/test_widgets_browser.py) drives Debian's Chromium: installed here when missing, as root
# with apt-get (a fresh Debian machine, CI); elsewhere it skips and `-rs` prints the one-line reason.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium + chromium-driver for the browser test"; \
	  (timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq \
	    chromium chromium-driver) >/dev/null 2>&1 || echo "note: chromium could not be installed; the browser test will skip"; \
	else echo "note: no chromium/chromedriver and no root apt-get: the browser test will skip (install chromium + chromium-driver to run it)"; fi

# The raw CSVs the bundled sets are built from are not tracked (issue 23); the tests of mp-bundled-52 read them.
# Copied (verified) from ../shared/data when it sits beside the clone, as in CI; else downloaded; else those tests skip.
SOURCES_FROM ?= $(if $(wildcard ../shared/data/SHA256SUMS),../shared/data,)
sources: install
	@$(VENV)/bin/mattergen-kit fetch-data sources $(if $(SOURCES_FROM),--from $(SOURCES_FROM),) \
	  || echo "note: source files not fetched; the mp-bundled-52 tests will skip (-rs prints why)"

test: install browser sources
	MATTERGEN_KIT_FULL_DATA_TESTS=1 $(PY) -m pytest tests -q -rs

clean-cache:
	rm -rf datasets/cache
