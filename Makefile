# The two commands of the README: `make demo` and `make test`. Both set everything up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# Test processes: the broker and cluster tests mostly wait on Kafka, so two processes halve the
# wall time even on 2 cores. Each takes a whole test file (module fixtures such as the cluster stay
# in one process); each process starts its own broker on free ports. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

.PHONY: setup system-deps demo test clean

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

# The tests also validate the deployment files with promtool, run a real Prometheus server and
# check docker-compose.yml: Debian's prometheus and docker-compose packages provide those tools.
system-deps:
	@missing=""; for tool in prometheus promtool docker-compose; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages prometheus docker-compose (missing:$$missing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus docker-compose >/dev/null; \
	  else \
	    echo "error: missing$$missing; install them with: sudo apt-get install prometheus docker-compose"; exit 1; \
	  fi; \
	fi

test: setup system-deps
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

clean:
	-$(BIN)/textstream kafka stop
	rm -rf $(VENV) deploy/kafka/libs deploy/kafka/run deploy/kafka/run-demo .pytest_cache
