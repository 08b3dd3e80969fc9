# The two commands of the README: `make demo` and `make test`. Both set everything up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "textstream needs Python 3.11, found " + sys.version.split()[0] + " (set PYTHON=/path/to/python3.11)")'
	@command -v java >/dev/null || { echo "error: java not found; the local Kafka broker needs Java 17 (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "error: mvn not found; the local Kafka broker is assembled with Maven (apt-get install maven)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/textstream demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	-$(BIN)/textstream kafka stop
	rm -rf $(VENV) deploy/kafka/libs deploy/kafka/run deploy/kafka/run-demo .pytest_cache
