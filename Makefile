# Developer entry points for zk-sensor.
#
#   make venv    .venv with the package (editable) and the dev tools (pytest, ruff)
#   make demo    a 3-server ZooKeeper ensemble, 3 daemons and zk-collector (demo/demo.py);
#                prints the line that points zk-sensorctl at it (.demo/zk-sensorctl.toml)
#   make check   ruff, mypy (strict) and the fast tier (tests/fast: the protocol against an
#                in-memory ZooKeeper, plus the pure-logic tests): under 2 minutes
#   make test    ruff, mypy, then the whole suite (fast, integration against real ZooKeeper
#                servers, the lab) on pytest-xdist workers, one test file per worker
#   make lint    ruff only
#   make soak    the randomized nemesis alone for 10 minutes (NEMESIS_SEED=S replays a run)
#   make bench   the collector's throughput, memory and page load; the fleet's cost and
#                scale: real daemons, the swarm, the seed's design (bench/)
#   make lab     systemd-nspawn machines from ansible/inventory, provisioned by site.yml (root)
#   make lab-down  stop and remove them (ansible/lab/lab.py)
#   make docs    docs/generate.py (the generated references), then mkdocs build --strict
#                into build/site
#   make man     man pages of the four programs into build/man (man -l build/man/zk-sensor.1)
#   make clean   caches, build output and .demo/ (keeps .venv; `make distclean` drops it too)
#
# The tests and the demo start Debian's `zookeeper` package; `make zookeeper` installs it
# when missing (root only, through apt-get). The tests also run `promtool` on the alerting
# rules (prometheus/): `make promtool` installs Debian's `prometheus` package, which ships it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
# Written after a successful install: re-running `make venv` is instant until
# pyproject.toml changes.
VENV_STAMP := $(VENV)/.installed
ZK_JAR := /usr/share/java/zookeeper.jar
PROMTOOL := /usr/bin/promtool
PYTEST_ARGS ?= -q -ra
# Workers for `make test`: the suite mostly waits on servers and timers, so more workers
# than cores pays; a file's tests stay on one worker (their module fixtures are costly).
TEST_WORKERS ?= 4

.PHONY: venv zookeeper promtool demo check test soak lint bench clean distclean lab lab-down docs man

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@if ! [ -x $(VENV_PY) ]; then \
	    if ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
	        if [ "$$(id -u)" -ne 0 ]; then \
	            echo "make: '$(PYTHON) -m venv' is unavailable; run: sudo apt-get install python3-venv" >&2; \
	            exit 1; \
	        fi; \
	        echo "+ apt-get install python3-venv"; \
	        apt-get update; \
	        DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv; \
	    fi; \
	    echo "+ $(PYTHON) -m venv $(VENV)"; \
	    $(PYTHON) -m venv $(VENV); \
	fi
	$(VENV_PY) -m pip install --disable-pip-version-check -e '.[dev]'
	touch $@

zookeeper:
	@if ! [ -f $(ZK_JAR) ]; then \
	    if [ "$$(id -u)" -ne 0 ]; then \
	        echo "make: ZooKeeper is missing ($(ZK_JAR)); run: sudo apt-get install zookeeper" >&2; \
	        exit 1; \
	    fi; \
	    echo "+ apt-get install zookeeper"; \
	    apt-get update; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y zookeeper; \
	fi
	@java -version 2>/dev/null || { \
	    echo "make: 'java -version' fails; ZooKeeper needs a JRE: apt-get install default-jre-headless" >&2; \
	    exit 1; \
	}

# --no-install-recommends: promtool is all the tests need, not the node exporter.
promtool:
	@if ! [ -x $(PROMTOOL) ]; then \
	    if [ "$$(id -u)" -ne 0 ]; then \
	        echo "make: promtool is missing ($(PROMTOOL)); run: sudo apt-get install prometheus" >&2; \
	        exit 1; \
	    fi; \
	    echo "+ apt-get install prometheus"; \
	    apt-get update; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
	fi

demo: venv zookeeper
	$(VENV_PY) demo/demo.py

check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS) -m fast

test: venv zookeeper promtool
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS) -n $(TEST_WORKERS) --dist loadfile

soak: venv zookeeper
	NEMESIS_SECONDS=600 $(VENV)/bin/pytest -s -q tests/test_nemesis.py

bench: venv zookeeper
	$(VENV_PY) bench/collector.py
	$(VENV_PY) bench/fleet_cost.py

lab: venv
	$(VENV_PY) ansible/lab/lab.py up

lab-down: venv
	$(VENV_PY) ansible/lab/lab.py down

docs: venv
	$(VENV_PY) docs/generate.py
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

man: venv
	$(VENV_PY) docs/generate.py --man-only --man build/man

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf .demo .pytest_cache .ruff_cache build test-output daemon/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
