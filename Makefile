# The README's commands.  Each target installs what it needs first.
PY := .venv/bin/python
KERNEL ?= 6.1
PYTEST_ARGS ?=
KERNELS ?= all
JOBS ?= 2
SOAK_S ?= 3600

.PHONY: setup setup-browser race test typecheck unit vm-test bench bugs soak matrix survey clean host-check nightly-check

setup:
	@sh scripts/setup.sh

# Also headless Chromium, for the HTML report's browser test.
setup-browser:
	@sh scripts/setup.sh --browser

race: setup
	$(PY) -m harness race --kernel $(KERNEL)

test: setup-browser typecheck
	$(PY) -m pytest -q -p no:cacheprovider --kernel $(KERNEL) $(PYTEST_ARGS) tests

# Format and lint (ruff), types (mypy), and the stages' import layering
# (pyproject.toml's importlinter contracts).
typecheck: setup
	.venv/bin/ruff format --check --quiet .
	.venv/bin/ruff check --quiet .
	$(PY) -m mypy
	.venv/bin/lint-imports --no-logo --cache-dir .cache/import-linter  # the project writes only under .cache and build

unit: setup-browser typecheck
	$(PY) -m pytest -q -p no:cacheprovider -m "not vm" tests

# The seed's claims (tests/claims) on every kernel: build/matrix/matrix.{md,json}
# and the page build/matrix/index.html, whose cells link the guests' console logs.
matrix: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/claims --kernel $(KERNELS) -n $(JOBS) --matrix-out build/matrix $(PYTEST_ARGS) \
		--keep-console-logs

# Every ready-made race target (harness/race/targets.py) on the given kernels:
# build/survey/survey.md, survey.json and index.html.  Slow: minutes per kernel.
survey: setup
	$(PY) -m harness survey --kernel $(KERNELS)

bench: setup
	$(PY) bench/bench.py --kernel $(KERNEL)

# The soak (bench/soak.py): one refcount lookup race of SOAK_S seconds, the
# harness's and the guest's RSS sampled every 10 s: build/soak/race/summary.json.
soak: setup
	$(PY) bench/soak.py --out build/soak/race --report build/soak/race/report.json -- \
		$(PY) -m harness race --kernel $(KERNEL) --scheme refcount --workload lookup \
		--duration $(SOAK_S) --json build/soak/race/report.json

# The bug benchmark (bench/bugs): unload bugs put into a derived debug kernel,
# each raced on it and on the unpatched kernel; recall, false alarms, time to
# catch in build/bugs/bugs.md.  Slow: a debug kernel build, then minutes per case.
bugs: setup
	$(PY) bench/bugs/run.py $(ARGS)

# The README's two commands in a Debian 13 root made with mmdebstrap, on a clean
# clone of HEAD (needs root): build/host-check/STAMP/summary.txt.
host-check: setup
	@bash scripts/host-check.sh

# The nightly workflow's kernel job and page job for KERNEL, replayed from
# .github/workflows/nightly.yml in clean Debian roots on two nights, then the
# page against a planted change (needs root; about half an hour cold):
# build/nightly-check/STAMP/summary.txt.  --cold: ARGS=--cold.
nightly-check: setup
	@$(PY) -m nightlycheck --kernel $(KERNEL) $(ARGS)

clean:
	rm -rf build
