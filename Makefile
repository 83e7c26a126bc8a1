# The README's two commands are `make demo` (the main job) and `make test` (the whole suite).
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: bootstrap demo test test-fast lint typecheck imports bench reliability clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/python -m samples.demo $(if $(KEEP),--keep,)

test: bootstrap lint imports
	$(VENV)/python -m pytest -q tests

test-fast: bootstrap
	$(VENV)/python -m pytest -q -m "not slow" tests

lint: bootstrap
	$(VENV)/ruff check ledger node tests bench samples
	$(VENV)/mypy

imports: bootstrap
	$(VENV)/lint-imports

bench: bootstrap
	$(VENV)/python -m bench.run --quick

reliability: bootstrap
	$(VENV)/python -m pytest -q -m "slow or scenario" tests

clean:
	rm -rf .venv run .pytest_cache .mypy_cache .ruff_cache .hypothesis
