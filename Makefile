# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# INFAAS_HOME: as for `infaas` by hand, ~/.infaas unless set (`infaas home` prints it)

.PHONY: venv demo serve test unit integration lint typecheck bench proto clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: venv  ## prepare the digits app, serve it in one process, send model-less queries
	$(BIN)/infaas demo

serve: venv  ## the demo, then keep serving on :8080 until Ctrl-C
	$(BIN)/infaas demo --serve

# Two pytest-xdist workers: the tests that share the whole-system stacks run in one group
# on one worker, everything else beside them (TEST_WORKERS=0 runs them in this process).
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

test: venv lint typecheck  ## every test: unit and integration (needs the local services)
	$(PYTEST)

unit: venv
	$(PYTEST) tests/unit

integration: venv
	$(PYTEST) tests/integration

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: venv
	$(BIN)/mypy .

bench: venv  ## benchmarks; figures land in bench/results/
	$(BIN)/python -m bench.pipeline

# the Open Inference Protocol's gRPC messages (generated code is committed)
proto: venv
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \
		api_gateway/oip_grpc/grpc_service.proto

clean:
	rm -rf $(VENV) .infaas .mypy_cache .ruff_cache .pytest_cache
