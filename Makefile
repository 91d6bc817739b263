# The two commands the README promises: `make test` (everything, from a fresh machine) and
# `make relay` (a local relay from the same templates the tests use, until Ansible lands).
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: test deps lint typecheck pytest relay bench appliance

test: deps lint typecheck pytest

deps:
	@scripts/install-deps.sh

lint: deps
	$(BIN)/ruff check milter tests scripts
	$(BIN)/ruff format --check milter tests scripts
	$(BIN)/lint-imports --no-logo --no-cache  # the layers of milter/relayguard/ ([tool.importlinter] in pyproject.toml)

typecheck: deps
	$(BIN)/mypy

pytest: deps
	$(BIN)/pytest --cov --cov-report=term $(PYTEST_ARGS)

relay: deps
	$(BIN)/python scripts/local_relay.py

# The appliance on this machine: ansible-core in its own venv, ansible/site.yml applied locally.
# Site settings: ansible/vars/site.yml; ARGS go to ansible-playbook (e.g. ARGS="-e @site.yml").
appliance:
	scripts/appliance.sh $(ARGS)

# Not part of `make test`: minutes of load, written to bench/results/ (see bench/README.md).
bench: deps
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/attachment_memory.py
	$(BIN)/python bench/soak.py
