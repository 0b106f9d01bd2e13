# Two commands on a fresh machine (Python 3.11):
#   make demo   install, then generate 32 crystals with the bundled model (CIFs + a PNG grid in out/demo)
#   make test   install, then run the test suite (builds the bundled data cache once, ~4 min)
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
NUM    ?= 32
STEPS  ?=

.PHONY: install demo test clean-cache

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

test: install
	MATTERGEN_KIT_FULL_DATA_TESTS=1 $(PY) -m pytest tests -q

clean-cache:
	rm -rf datasets/cache
