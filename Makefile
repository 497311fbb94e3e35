# streamfeat: every set-up step lives here. Two commands on a fresh clone:
#   make demo   run the main job end to end
#   make test   install everything, start/stop Kafka and Redis, run lint + the whole suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv system-deps bench-deps lint test test-fast test-faults demo bench bench-smoke kafka-start kafka-stop clean

help:
	@echo "make demo        run the main job end to end (venv, Kafka, dataflow, serving)"
	@echo "make test        lint + the whole test suite against a real broker"
	@echo "make lint        ruff check + ruff format --check + mypy --strict + import contracts"
	@echo "make test-faults the long fault-injection and fuzzing suite"
	@echo "make bench       full benchmarks -> benchmarks/RESULTS.md"
	@echo "make bench-smoke every benchmark at a tiny size"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests use: redis-server (online table tests), chromium
# (dashboard browser tests) and kcat (the README's own-event line). Installed only when missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v kcat >/dev/null 2>&1 || missing="$$missing kcat"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check cli engine serving dataflows feature_defs tests benchmarks
	$(BIN)/ruff format --check cli engine serving dataflows feature_defs tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# Leftover brokers: only JVMs this test run started count (they inherit TEST_RUN_ID in
# their environment), so brokers of other users or sessions on the machine never fail it.
test: $(STAMP) system-deps lint
	@run_id="streamfeat-test-$$$$-$$(date +%s%N)"; \
	TEST_RUN_ID=$$run_id $(BIN)/python -m pytest -q -p no:cacheprovider --durations=20; status=$$?; \
	stray=""; \
	for pid in $$(pgrep -f '[s]treamfeat.kafka=1'); do \
	  if tr '\0' '\n' < /proc/$$pid/environ 2>/dev/null | grep -qx "TEST_RUN_ID=$$run_id"; then stray="$$stray $$pid"; fi; \
	done; \
	if [ -n "$$stray" ]; then echo "stray Kafka process left behind by this test run:$$stray"; exit 1; fi; \
	exit $$status

# The long fault-injection and fuzzing suite (10 kill -9 trials, broker and Redis
# outages, 1,000,000 fuzzed records); the short version runs in `make test`.
test-faults: $(STAMP) system-deps
	STREAMFEAT_FAULTS=long $(BIN)/python -m pytest -q -p no:cacheprovider -s tests/faults tests/fuzz

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/streamfeat demo

# wrk drives the serving benchmarks; without it they fall back to a Python load
# generator that takes far more CPU from the server under test and changes every figure.
bench-deps:
	@missing=""; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@command -v wrk >/dev/null 2>&1 || { echo "bench-deps: wrk is still missing after apt-get install" >&2; exit 1; }
	@command -v redis-server >/dev/null 2>&1 || { echo "bench-deps: redis-server is still missing after apt-get install" >&2; exit 1; }

bench: $(STAMP) bench-deps
	$(BIN)/python -m benchmarks.run --size full

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks.run --size smoke

kafka-start: $(STAMP)
	$(BIN)/streamfeat kafka start

kafka-stop: $(STAMP)
	$(BIN)/streamfeat kafka stop

clean:
	rm -rf .streamfeat build dist *.egg-info
