# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# INFAAS_HOME: as for `infaas` by hand, ~/.infaas unless set (`infaas home` prints it)

# Python reads each module's compiled bytecode from __pycache__ when it is there, and
# compiles the source again otherwise; PYTHONDONTWRITEBYTECODE (set on this machine's
# shells) stops it writing any, so every process of a run (the test workers and every
# gateway, worker and CLI the tests start) compiled everything it imported again: 2.2 s
# of CPU per gateway start (3.6 s against 1.4 s). Our recipes let Python keep its
# bytecode (in .venv and the checkout's __pycache__, which git ignores).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: venv demo serve test unit integration lint typecheck bench proto clean stack-test

# uv installs the same pins as pip, about 15x faster (a fresh venv: pip 100 s, uv 6-14 s
# here). It gets pip's own settings (find-links, extra index URLs, constraints) from
# `pip config list`, and, like pip, takes a version from whichever index has it
# (unsafe-best-match). Where uv cannot be installed, pip does the job.
UV_VERSION := 0.13.9
PIP_SETTINGS = $$($(PYTHON) -m pip config list 2>/dev/null \
	| sed -nE "s/^[^.]*\.(find-links|extra-index-url|constraint)='(.*)'$$/\1 \2/p" \
	| while read -r key values; do for v in $$values; do echo "--$$key $$v"; done; done)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@echo "setting up $(VENV): the pins of requirements-dev.txt and this package (uv, else pip)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -m pip install -q uv==$(UV_VERSION) 2>/dev/null; then \
		$(BIN)/uv pip install -q --python $(BIN)/python --index-strategy unsafe-best-match \
			$(PIP_SETTINGS) -r requirements-dev.txt -e . ; \
	else \
		echo "uv could not be installed; pip instead (a few minutes)"; \
		$(BIN)/python -m pip install -q -r requirements-dev.txt && \
		$(BIN)/python -m pip install -q --no-deps -e . ; \
	fi
	@touch $(STAMP)

venv: $(STAMP)

demo: venv  ## prepare the digits app, serve it in one process, send model-less queries
	$(BIN)/infaas demo

serve: venv  ## the demo, then keep serving on :8080 until Ctrl-C
	$(BIN)/infaas demo --serve

# Three pytest-xdist workers on two cores: the tests that share a whole-system stack run
# in one group on one worker, everything else beside them (TEST_WORKERS=0 runs them in
# this process). Many tests wait on other processes, so a third worker fills the cores
# they leave idle: pytest 289 s with two, 233 s with three, 235 s with four, on the same
# warm caches (docs/decisions.md, "The test suite's time").
TEST_WORKERS ?= 3
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

# The demo models and catalog the stacks are seeded from are built beside lint and the
# type check (tests/prebuild.py; at once when the test cache has them): on a cold cache
# that is 100 s that no xdist worker then waits for. Its log: .infaas/prebuild.log.
test: venv  ## every test: unit and integration (needs the local services)
	@mkdir -p .infaas
	@$(BIN)/python -m tests.prebuild > .infaas/prebuild.log 2>&1 & prebuild=$$!; \
	if $(MAKE) --no-print-directory lint typecheck; then \
		if wait $$prebuild; then tail -n 1 .infaas/prebuild.log; \
		else echo "tests/prebuild.py failed (.infaas/prebuild.log); the fixtures will build"; fi; \
		$(PYTEST); \
	else status=$$?; kill $$prebuild 2>/dev/null; exit $$status; fi

unit: venv
	$(PYTEST) tests/unit

integration: venv
	$(PYTEST) tests/integration

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

# mypy's cache outside the checkout, so a fresh clone checks only what changed (a fresh
# cache: 65-73 s here; a clone of an already-checked commit: 3 s). mypy revalidates every
# entry by the file's hash, and a cache from another mypy version is ignored.
MYPY_CACHE ?= $(HOME)/.cache/infaas/mypy

typecheck: venv
	$(BIN)/mypy --cache-dir $(MYPY_CACHE) .

# The docker-compose stack built and run for real with podman, then removed (root, about
# 15-30 minutes; not part of `make test`): run it after every change under infra/, to a
# Dockerfile or to the requirements. README, "The stack, tested"; infra/stacktest/.
stack-test: venv
	PYTHONPATH=infra $(BIN)/python -m stacktest $(STACK_TEST_ARGS)

bench: venv  ## benchmarks; figures land in bench/results/
	$(BIN)/python -m bench.pipeline

# the Open Inference Protocol's gRPC messages (generated code is committed)
proto: venv
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \
		api_gateway/oip_grpc/grpc_service.proto

clean:
	rm -rf $(VENV) .infaas .mypy_cache .ruff_cache .pytest_cache
