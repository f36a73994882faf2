# Two commands do everything on a fresh machine:
#   make run    set up, seed the landing zone up to now when it is empty (DEVICES devices, the last DAYS days and
#               today so far), keep today's readings landing (the live simulator, a file every LIVE_INTERVAL seconds;
#               LIVE=0 turns it off), serve the Dagster UI (webserver + daemon). Ctrl-C stops all of it: the UI
#               and its daemon, the simulator and the embedded Redis. fs-serve (the online store over HTTP) runs
#               beside them on SERVE_PORT (SERVE=0 turns it off).
#   make test   set up, lint (ruff, import contracts), run the whole test suite on real Spark, Delta Lake and Redis
# The paging drill, a benchmark of several hours: make drill-oncall (DRILL_ARGS="--healthy-minutes 3" for a trial).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3000
DEVICES ?= 200
DAYS ?= 3
LIVE ?= 1
LIVE_INTERVAL ?= 300
SERVE ?= 1
SERVE_PORT ?= 8000
DRILL_ARGS ?=

export DAGSTER_HOME ?= $(CURDIR)/dagster_home
export FS_DATA_ROOT ?= $(CURDIR)/data

.PHONY: setup run serve test test-unit lint validate sim-live import-skab bench bench-live drill-oncall docs screenshots clean-data system-deps cluster-check

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (or run make PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	@# uv installs the same pinned set as pip in half the time on a clean machine (78 s against 158 s).
	$(BIN)/pip install --quiet uv==0.13.10
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[dev]"
	@touch $@

# Java for Spark and a real redis-server for the online store, from Debian's packages when missing.
system-deps:
	@command -v java >/dev/null || { echo "Installing a Java 17 runtime for Spark..."; $(APT) openjdk-17-jre-headless; }
	@command -v redis-server >/dev/null || { echo "Installing redis-server..."; $(APT) redis-server; }

APT = $$( [ "$$(id -u)" = 0 ] || echo sudo ) sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$$@" >/dev/null' apt

setup: system-deps $(BIN)/.installed
	@$(BIN)/python -m fs_resources.spark

# The simulator runs in the background of the recipe's shell, which ignores Ctrl-C for it: the EXIT
# trap stops it (and Redis) once `dagster dev`, in the foreground, has stopped on Ctrl-C or by itself.
# `live` continues the landing zone from where its readings end, so a later `make run` fills the gap.
run: setup
	@mkdir -p "$(FS_DATA_ROOT)" && chmod 700 "$(FS_DATA_ROOT)" "$(DAGSTER_HOME)"
	$(BIN)/fs-sim generate --if-empty --until-now --devices $(DEVICES) --days $(DAYS)
	$(BIN)/python -m fs_resources.embedded_redis start
	@sim=; serve=; trap '[ -z "$$sim" ] || kill $$sim 2>/dev/null; [ -z "$$serve" ] || kill $$serve 2>/dev/null; $(BIN)/python -m fs_resources.embedded_redis stop' EXIT; \
	if [ "$(LIVE)" != 0 ]; then \
	  $(BIN)/fs-sim live --interval $(LIVE_INTERVAL) >>"$(DAGSTER_HOME)/fs-sim-live.log" 2>&1 & sim=$$!; \
	  echo "fs-sim live: today's readings land every $(LIVE_INTERVAL) s (log: $(DAGSTER_HOME)/fs-sim-live.log; LIVE=0 turns it off)"; \
	fi; \
	if [ "$(SERVE)" != 0 ]; then \
	  $(BIN)/fs-serve --host 127.0.0.1 --port $(SERVE_PORT) $$( [ -n "$$FS_SERVE_API_KEYS$$FS_SERVE_API_KEYS_FILE" ] || echo --no-auth ) \
	    >>"$(DAGSTER_HOME)/fs-serve.log" 2>&1 & serve=$$!; \
	  echo "fs-serve: http://127.0.0.1:$(SERVE_PORT)/openapi.json (log: $(DAGSTER_HOME)/fs-serve.log; SERVE=0 turns it off)"; \
	fi; \
	$(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

# Answers fast, then in full: lint, then the quick tier on two workers (a typo or a broken unit fails
# within a minute and stops here; 38 s against 55 s on one), then integration and e2e on two workers,
# whole modules each (module fixtures built once), slowest tier first (tests/conftest.py).
# The S3 connector is resolved once before the workers start: each worker's session loads it
# (the object-storage test is among those collected), and two first resolutions would race in one cache.
test: setup lint
	$(BIN)/pytest -m unit -q -n 2
	$(BIN)/python -m fs_resources.spark --s3
	$(BIN)/pytest -n 2 --dist loadscope --no-loadscope-reorder -m "not unit"

# The quick tier: pure Python and numpy, no Spark session, no Redis, no Dagster runs (under 3 minutes).
test-unit: setup
	$(BIN)/pytest -m unit

# Style and layering: ruff (lint and format), the import-linter contracts in pyproject.toml
# (domain <- resources <- assets <- checks <- sensors <- location, no cycles), and `dg check defs`
# (the code location loads, as `dagster dev` loads it; [tool.dg] in pyproject.toml).
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg check defs

validate: setup
	$(BIN)/dagster definitions validate -w workspace.yaml

# The online feature server alone (API keys from FS_SERVE_API_KEYS or FS_SERVE_API_KEYS_FILE; SERVE_ARGS=--no-auth on loopback).
serve: setup
	$(BIN)/fs-serve --port $(SERVE_PORT) $(SERVE_ARGS)

# For a `make run LIVE=0`: keep today's readings landing from another terminal.
sim-live: setup
	$(BIN)/fs-sim live --devices $(DEVICES) --interval $(LIVE_INTERVAL)

import-skab: setup
	$(BIN)/fs-sim import-skab

bench: setup
	FS_SPARK_DRIVER_MEMORY=12g $(BIN)/python bench/clean_bench.py --devices 10000
	FS_SPARK_DRIVER_MEMORY=12g $(BIN)/python bench/fleet_day.py --devices 10000
	FS_SPARK_DRIVER_MEMORY=12g $(BIN)/python bench/features_bench.py --devices 10000
	$(BIN)/python bench/online_bench.py
	$(BIN)/python bench/offline_bench.py
	$(BIN)/python bench/skab_anomaly_auc.py

# Freshness under live load: the design fleet writing a file every 5 minutes while the daemon and its
# sensors run, 30 minutes measured after the day so far has been caught up (about an hour and a half in all).
bench-live: setup
	FS_SPARK_DRIVER_MEMORY=6g $(BIN)/python bench/live_freshness.py --devices 100000 --minutes 30

# The paging drill: a live store of 50 devices on a fresh instance, alerts to two local webhooks; a healthy
# hour, then seven incidents one at a time, each repaired (several hours). bench/results/oncall_drill.json.
drill-oncall: setup
	$(BIN)/python bench/oncall_drill.py $(DRILL_ARGS)

docs: setup
	$(BIN)/python -m fs_domain.features v2 > docs/features.md
	$(BIN)/python -m fs_domain.device > docs/device_object.md
	$(BIN)/python bench/performance_page.py

# The operator guide's pictures: this project's UI in a real headless Chromium (Debian's package).
screenshots: setup
	@command -v chromium >/dev/null || { echo "Installing chromium..."; $(APT) chromium; }
	$(BIN)/python docs/screenshots.py

clean-data:
	-$(BIN)/python -m fs_resources.embedded_redis stop
	rm -rf $(FS_DATA_ROOT)

# A Spark standalone cluster (master + 2 workers on 127.0.0.1) runs one simulated day of 1,000 devices.
cluster-check: setup
	$(BIN)/python bench/cluster_day.py --devices 1000 --cluster
