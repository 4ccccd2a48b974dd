# PixTrack developer entry points. A new machine needs only these two:
#
#   make run     install missing Debian packages, start (or reuse) the project-local PostgreSQL
#                and Redis in .run/, build, and run pixtrackd on port $PIXTRACK_PORT (50051)
#   make test    the whole suite against throwaway PostgreSQL and Redis (what CI runs)
#
# Others: make deps | venv | build | services | services-stop | interop | fuzz | help
# Variables: BUILD_DIR=.build (SwiftPM scratch path; PIXTRACKD defaults to $BUILD_DIR/debug/pixtrackd),
#            ARGS='--enable-test-service' (extra pixtrackd flags for `make run`),
#            PYTEST_ARGS='-k health -x' (for `make test` / `make interop`),
#            DATABASE_URL / REDIS_URL (for `make run`: use these, start nothing),
#            FUZZ_ARGS='--seconds 300 json' (for `make fuzz`: scripts/fuzz's arguments).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# BUILD_DIR: SwiftPM scratch folder (e.g. .build-infra to stay out of another build's way).
BUILD_DIR ?= .build
SWIFT_BUILD := swift build --scratch-path $(BUILD_DIR)
PIXTRACKD ?= $(abspath $(BUILD_DIR))/debug/pixtrackd
VENV_PY := $(CURDIR)/.run/venv/bin/python
ARGS ?=
PYTEST_ARGS ?=

# $(call phase,TITLE,COMMAND): a progress line, the command, then "ok (N s)" or a FAILED line.
phase = t=$$SECONDS; echo "==> $(1)"; \
	if $(2); then echo "    ok: $(1) ($$((SECONDS - t)) s)"; \
	else rc=$$?; echo "==> FAILED: $(1) (exit $$rc)" >&2; exit $$rc; fi

.PHONY: help deps venv build run services services-stop test interop fuzz \
        _test-phases _interop-phase

help:
	@sed -n '1,/^$$/p' Makefile | sed 's/^# \{0,1\}//'

deps:
	@scripts/deps

venv:
	@scripts/pyenv

build: deps
	@$(SWIFT_BUILD)

# Project-local services: start or reuse them and show their addresses.
services: deps
	@scripts/services dev >/dev/null
	@scripts/services status

services-stop:
	@scripts/services stop

run: deps
	@services_env="$$(scripts/services dev)"; eval "$$services_env"; \
	echo "==> swift build"; \
	$(SWIFT_BUILD); \
	export PIXTRACK_PLUGIN_DIR="$${PIXTRACK_PLUGIN_DIR:-$(abspath $(BUILD_DIR))/debug}"; \
	port="$${PIXTRACK_PORT:-50051}"; \
	export PIXTRACK_PUBLIC_PORT="$${PIXTRACK_PUBLIC_PORT:-50052}"; \
	echo "==> pixtrackd on 127.0.0.1:$$port  (Ctrl-C stops it; PostgreSQL/Redis keep running: make services-stop)"; \
	echo "    public port 127.0.0.1:$$PIXTRACK_PUBLIC_PORT: /go, /t, /webhooks, /healthz only (what a reverse proxy exposes)"; \
	echo "    DATABASE_URL=$$(echo "$$DATABASE_URL" | sed -E 's#//([^:/@]+):[^@/]*@#//\1:***@#')  (password: .run/pg-app-password)"; \
	echo "    PIXTRACK_SECRETS_KEY_FILE=$$PIXTRACK_SECRETS_KEY_FILE"; \
	echo "    REDIS_URL=$$REDIS_URL"; \
	echo "    PIXTRACK_PLUGIN_DIR=$$PIXTRACK_PLUGIN_DIR"; \
	echo "    call it:  $(abspath $(BUILD_DIR))/debug/pixtrack health --addr 127.0.0.1:$$port"; \
	echo "              $(abspath $(BUILD_DIR))/debug/pixtrack list --addr 127.0.0.1:$$port"; \
	echo "              curl http://127.0.0.1:$$port/metrics       (walkthrough: docs/walkthrough.md)"; \
	exec "$(PIXTRACKD)" $(ARGS)

# The whole suite. Throwaway PostgreSQL/Redis live exactly as long as the phases.
test: deps
	@echo "==> python venv (.run/venv)"
	@scripts/pyenv
	@scripts/services temp $(MAKE) _test-phases

_test-phases:
	@$(call phase,[1/7] scripts/gen-proto --check,scripts/gen-proto --check)
	@$(call phase,[2/7] swift build --build-tests,$(SWIFT_BUILD) --build-tests)
	@$(call phase,[3/7] swift test (all but the plugin host),swift test --skip-build --scratch-path $(BUILD_DIR) --skip PluginHostTests)
	@# In a process of their own: they compile fixtures and spawn fake gateways, which must not
	@# skew the timing checks of the storage and RPC suites.
	@$(call phase,[4/7] swift test --filter PluginHostTests,swift test --skip-build --scratch-path $(BUILD_DIR) --filter PluginHostTests)
	@# Every committed fuzz seed and regression input, once, through the normal build (docs/fuzzing.md).
	@$(call phase,[5/7] fuzz corpus replay: scripts/fuzz --replay,BUILD_DIR=$(BUILD_DIR) scripts/fuzz --replay)
	@$(call phase,[6/7] interop tests: pytest Tests/interop against $(PIXTRACKD),$(MAKE) _interop-phase)
	@# The libFuzzer build (.build-fuzz) and 3 seconds of fuzzing a target.
	@$(call phase,[7/7] fuzz smoke: scripts/fuzz --smoke,BUILD_DIR=$(BUILD_DIR) scripts/fuzz --smoke)

# libFuzzer over the parsers (docs/fuzzing.md): 60 s a target by default.
fuzz: deps
	@scripts/fuzz $(FUZZ_ARGS)

# Only the interop suite, against an already built (or just built) pixtrackd.
interop: deps
	@scripts/pyenv
	@scripts/services temp bash -c '$(call phase,swift build --product pixtrackd,$(SWIFT_BUILD) --product pixtrackd) && \
	    $(call phase,interop tests: pytest Tests/interop against $(PIXTRACKD),$(MAKE) _interop-phase)'

_interop-phase:
	@test -x "$(PIXTRACKD)" || { echo "error: $(PIXTRACKD) not built" >&2; exit 1; }
	@PIXTRACKD="$(PIXTRACKD)" "$(VENV_PY)" -m pytest Tests/interop -ra $(PYTEST_ARGS)
