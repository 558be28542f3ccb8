# The README's commands.  Each target installs what it needs first.
PY := .venv/bin/python
KERNEL ?= 6.1
PYTEST_ARGS ?=

.PHONY: setup race test unit vm-test bench matrix clean

setup:
	@sh scripts/setup.sh

race: setup
	$(PY) -m harness race --kernel $(KERNEL)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider --kernel $(KERNEL) $(PYTEST_ARGS) tests

unit: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not vm" tests

bench: setup
	$(PY) bench/bench.py --kernel $(KERNEL)

clean:
	rm -rf build
