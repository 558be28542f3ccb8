# The README's commands.  Each target installs what it needs first.
PY := .venv/bin/python
KERNEL ?= 6.1
PYTEST_ARGS ?=
KERNELS ?= all
JOBS ?= 2

.PHONY: setup race test typecheck unit vm-test bench matrix clean host-check

setup:
	@sh scripts/setup.sh

race: setup
	$(PY) -m harness race --kernel $(KERNEL)

test: setup typecheck
	$(PY) -m pytest -q -p no:cacheprovider --kernel $(KERNEL) $(PYTEST_ARGS) tests

typecheck: setup
	$(PY) -m mypy

unit: setup typecheck
	$(PY) -m pytest -q -p no:cacheprovider -m "not vm" tests

# The seed's claims (tests/claims) on every kernel: build/matrix/matrix.{md,json}.
matrix: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/claims --kernel $(KERNELS) -n $(JOBS) --matrix-out build/matrix

bench: setup
	$(PY) bench/bench.py --kernel $(KERNEL)

# The README's two commands in a Debian 13 root made with mmdebstrap, on a clean
# clone of HEAD (needs root): build/host-check/STAMP/summary.txt.
host-check: setup
	@bash scripts/host-check.sh

clean:
	rm -rf build
