# Switchboard — the two commands in the README are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GOOGLEAPIS = $$($(PY) -c 'import google.api.annotations_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parent.parent.parent)')
GRPC_PROTOS = $$($(PY) -c 'import grpc_tools, pathlib; print(pathlib.Path(grpc_tools.__file__).parent / "_proto")')
GENERATED := clients/python openapi clients/typescript/src
PROTOS := $(shell find proto/switchboard -name '*.proto' | sort)

.PHONY: run test check generate lint fmt typecheck buf-lint drift clean bench bench-full bench-peers

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

## run: start the service (gRPC on 127.0.0.1:50051) and the gateway (HTTP on 127.0.0.1:8080)
run: $(STAMP)
	$(PY) -m services.dev

## test: install what the tests need and run them
test: $(STAMP)
	$(PY) -m pytest

## generate: regenerate clients/python, openapi/ and clients/typescript from proto/
generate: $(STAMP)
	rm -rf .build/gen && mkdir -p .build/gen
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I proto -I $(GOOGLEAPIS) -I $(GRPC_PROTOS) \
	  --python_out=.build/gen --grpc_python_out=.build/gen \
	  --mypy_out=quiet:.build/gen --mypy_grpc_out=quiet:.build/gen $(PROTOS)
	find .build/gen/switchboard -type d -exec touch {}/__init__.py \;
	touch .build/gen/switchboard/py.typed
	mkdir -p clients/python && rm -rf clients/python/switchboard && cp -r .build/gen/switchboard clients/python/
	$(PY) -m gateway.openapi --out openapi/
	$(MAKE) clients/typescript/node_modules/.installed
	cd clients/typescript && npm run --silent generate

clients/typescript/node_modules/.installed: clients/typescript/package.json clients/typescript/package-lock.json
	cd clients/typescript && npm ci --no-audit --no-fund --silent
	@touch $@

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $@

## bench: quick benchmarks, side by side (< 5 min on 2 cores); results in bench/results/
bench: $(BENCH_STAMP)
	$(PY) -m bench

## bench-full: 5,000 subscribers / idle connections, longer runs
bench-full: $(BENCH_STAMP)
	$(PY) -m bench --full

## bench-peers: Go, Debian's grpc-gateway and wrk via apt, then build the grpc-gateway peer
bench-peers: $(BENCH_STAMP)
	bash bench/peers/install.sh

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

proto/node_modules/.bin/buf: proto/package.json
	cd proto && npm install --no-audit --no-fund --silent
	@touch $@

## buf-lint: lint the protos with buf's STANDARD rules (googleapis protos from the wheel, no BSR)
buf-lint: $(STAMP) proto/node_modules/.bin/buf
	rm -rf proto/.deps && mkdir -p proto/.deps/google/api proto/.deps/google/rpc
	cp $(GOOGLEAPIS)/google/api/{annotations,http,field_behavior}.proto proto/.deps/google/api/
	cp $(GOOGLEAPIS)/google/rpc/status.proto proto/.deps/google/rpc/
	cd proto && node_modules/.bin/buf lint

## drift: fail when regenerating changes committed generated code
drift: generate
	@git add -N $(GENERATED) 2>/dev/null || true
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
	  echo "generated code is out of date; run 'make generate' and commit:"; \
	  git status --porcelain -- $(GENERATED); git --no-pager diff --stat -- $(GENERATED); exit 1; fi

## check: everything CI checks
check: lint typecheck buf-lint drift test

clean:
	rm -rf $(VENV) .build proto/node_modules .mypy_cache .pytest_cache .ruff_cache
