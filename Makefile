# p2p-testbed front door. `make help` lists the targets; every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TB := $(VENV)/bin/testbed
PYTEST := $(VENV)/bin/python -m pytest

TOPO ?= two-switch
ACCEL ?= auto
CONFIG ?= default
KSRC ?=
PATCHES ?=
PYTEST_ARGS ?=
# QEMU=built: the VMs run on the testbed's own QEMU (testbed qemu build); default: the host's
QEMU ?=
PYTEST_QEMU := $(if $(QEMU),--qemu $(QEMU))
# pytest-xdist workers, each topology's tests on one worker (its VMs and warm spares are shared
# there): one per core, at most 4 (a worker holds up to four 2 GiB guests); JOBS=1: one process.
# One more worker than cores was faster on 2 cores (192 s against 207 s, before pciehp unplugs
# were confirmed from the guest: a worker's guest often waited, and the extra one filled the
# idle core) but starves vCPUs: in 6 runs it broke two timing assumptions (a KUnit kthread not
# started within 50 ms, a jiffies-based delay short by 3 ms), so the verdict would be less
# trustworthy, not only faster. JOBS=3 asks for it.
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
PYTEST_JOBS := $(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist loadgroup)

SUITE ?=

KERNEL_OPTS := --kernel-config $(CONFIG) $(if $(KSRC),--ksrc $(KSRC)) $(if $(PATCHES),--patches $(PATCHES))
# the same kernel for the suites: pytest builds (or reuses) KSRC + PATCHES itself
PYTEST_KERNEL := $(if $(KSRC),--kernel $(KSRC)) $(if $(PATCHES),--patches $(PATCHES))
# make test TOPO=mine.yaml: the suites on the topologies given (TOPO's default is make boot's)
PYTEST_TOPO := $(if $(filter command line environment,$(origin TOPO)),$(foreach t,$(TOPO),--topology $(t)))

.PHONY: help deps venv check kernel image qemu boot test unit kselftest coverage mutate ab bisect ci-rehearsal nightly bench clean-results clean-cache

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'
	@echo
	@echo "  variables: TOPO=$(TOPO) ACCEL=$(ACCEL) (auto|kvm|tcg) CONFIG=$(CONFIG) (default|debug|debug-full)"
	@echo "             QEMU=built|PATH (make boot, make test: the testbed's own QEMU; default: the host's)"
	@echo "             KSRC=/path/to/linux PATCHES=series.mbox|dir PYTEST_ARGS='-m p2p -k ...'"
	@echo "             SUITE=iommu|vfio|kunit (make kselftest; TOPO=kselftest has one device of each kind)"
	@echo "             BASE=REF (make ab)  GOOD=REF BAD=REF (make bisect): PYTEST_ARGS is their pytest selection"
	@echo "             JOBS=$(JOBS) (make test: parallel pytest-xdist workers, each with its own VMs)"
	@echo "             SUITES='$(SUITES)' (make coverage, make mutate: the pytest -m selection)"
	@echo "             MUTATE_ARGS='--function NAME --sample N --seed S --shard K/N --budget MIN --coverage-run DIR'"

deps: ## install missing Debian packages (as root; otherwise print the command)
	@scripts/install-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,kcidb,qemu]'
	@touch $@

venv: $(VENV)/.installed ## create the Python environment

kernel: deps venv ## build (or reuse) the kernel: CONFIG=, KSRC=, PATCHES=
	$(TB) kernel build $(KERNEL_OPTS)

image: deps venv ## build (or reuse) the guest image
	$(TB) image build

qemu: deps venv ## build (or reuse) the testbed's own QEMU (Debian's 10.0 source + qemu/patches); QEMU=built uses it
	@scripts/install-deps qemu
	$(TB) qemu build

boot: deps venv ## boot TOPO and open a shell in the guest; leaving it shuts the VM down
	$(TB) boot $(TOPO) --accel $(ACCEL) $(KERNEL_OPTS) $(PYTEST_QEMU)

# make check's workflow linters, from the venv ('.[dev]'). actionlint runs shellcheck on every
# `run:` script but skips it without a word when it cannot run it: shellcheck checks the shell
# scripts itself first, so a broken one stops here. zizmor runs offline: its online audits need
# the GitHub API.
WORKFLOWS := $(wildcard .github/workflows/*.yml)
# bench/ and scripts/ hold extensionless scripts: each by its interpreter line
SHELL_SCRIPTS := $(shell grep -lE '^\#!/bin/(ba)?sh' scripts/* bench/*)
PY_SCRIPTS := $(shell grep -l '^\#!/usr/bin/env python3' scripts/* bench/*)
check: venv ## lint (ruff) and formatting (ruff format --check) of the package, tests, bench/ and scripts/, types (mypy) of the package, bench/ and scripts/; workflows (actionlint + shellcheck, zizmor); CI runs it first
	$(VENV)/bin/ruff check testbed tests $(PY_SCRIPTS)
	$(VENV)/bin/ruff format --check testbed tests $(PY_SCRIPTS)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --scripts-are-modules $(PY_SCRIPTS)
	$(VENV)/bin/shellcheck $(SHELL_SCRIPTS)
	$(VENV)/bin/actionlint -shellcheck=$(VENV)/bin/shellcheck -pyflakes= $(WORKFLOWS)
	$(VENV)/bin/zizmor --offline --no-progress $(WORKFLOWS)

unit: venv ## unit tests only (no QEMU, seconds)
	$(PYTEST) tests/unit -q $(PYTEST_ARGS)

test: deps venv ## unit tests, the real-QEMU tree check, the VM suites and the tree's own tests (kernels + image built if missing); TOPO=FILE: on your topologies
	$(TB) kernel build $(KERNEL_OPTS)
	$(TB) image build
	$(PYTEST) tests -q $(PYTEST_JOBS) --accel $(ACCEL) --kernel-config $(CONFIG) $(PYTEST_KERNEL) $(PYTEST_QEMU) $(PYTEST_TOPO) --junitxml=results/junit.xml $(PYTEST_ARGS)

kselftest: deps venv ## the tree's own selftests and KUnit suites in TOPO (SUITE=iommu|vfio|kunit)
	$(TB) kselftest $(TOPO) $(SUITE) --accel $(ACCEL) --kernel-config $(CONFIG) $(if $(KSRC),--ksrc $(KSRC)) $(if $(PATCHES),--patches $(PATCHES))

# the suites that reach the coverage scope's code (make coverage, make mutate)
SUITES ?= p2p or hotunplug or vfio or p2pdma_api or aer
MUTATE_ARGS ?= --sample 10
coverage: deps venv ## kernel coverage of coverage-scope.yaml by the suites SUITES= (per test; table, lcov, Cobertura, HTML)
	$(TB) kernel build --kernel-config coverage $(if $(KSRC),--ksrc $(KSRC)) $(if $(PATCHES),--patches $(PATCHES))
	$(TB) image build
	$(PYTEST) tests/vm -q $(PYTEST_JOBS) --accel $(ACCEL) --coverage -m "$(SUITES)" $(PYTEST_KERNEL) $(PYTEST_TOPO) $(PYTEST_ARGS)

mutate: deps venv ## mutation testing of the scope's functions against SUITES= (MUTATE_ARGS='--function NAME --sample N')
	$(TB) image build
	$(TB) mutate $(MUTATE_ARGS) --kernel-config $(CONFIG) $(if $(KSRC),--ksrc $(KSRC)) -- -m "$(SUITES)" $(PYTEST_TOPO) $(PYTEST_ARGS)

# ab and bisect: PYTEST_ARGS is the selection as everywhere (ARGS, its old name, still works)
SELECTION := $(or $(PYTEST_ARGS),$(ARGS),-m p2p --topology $(TOPO))
ab: deps venv ## PATCHES= on the base kernel vs base + series over PYTEST_ARGS= (pytest selection); KSRC=, BASE=
	@test -n "$(PATCHES)" || { echo "make ab needs PATCHES=SERIES (and PYTEST_ARGS=\"-m p2p ...\")"; exit 2; }
	$(TB) ab --patches $(PATCHES) --kernel-config $(CONFIG) $(if $(KSRC),--ksrc $(KSRC)) $(if $(BASE),--base $(BASE)) -- $(SELECTION)

bisect: deps venv ## first bad commit in KSRC= between GOOD= and BAD= for the pytest selection PYTEST_ARGS=
	@test -n "$(KSRC)" -a -n "$(GOOD)" -a -n "$(BAD)" || { echo "make bisect needs KSRC= GOOD= BAD= (and PYTEST_ARGS=)"; exit 2; }
	$(TB) bisect --ksrc $(KSRC) --good $(GOOD) --bad $(BAD) --kernel-config $(CONFIG) -- $(SELECTION)

NIGHTLY_MUTANTS ?= 200
NIGHTLY_SEED ?= $(shell date +%Y%m%d)
ci-rehearsal: deps venv ## the GitHub workflow's jobs here, same commands and variables: check, plan, kernels, cells, merge (PRESET=fast|nightly SHARD=K/N)
	PRESET=$(or $(PRESET),fast) SHARD=$(SHARD) scripts/ci-rehearsal

nightly: deps venv ## the full matrix (every topology, IOMMU modes, default and debug-full), hot-unplug on debug-full without base fixes, then coverage and NIGHTLY_MUTANTS mutants
	$(TB) image build
	status=0; for config in default debug-full; do \
	  $(TB) kernel build --kernel-config $$config $(if $(KSRC),--ksrc $(KSRC)) $(if $(PATCHES),--patches $(PATCHES)) && \
	  $(PYTEST) tests -q --accel $(ACCEL) --matrix --kernel-config $$config $(PYTEST_KERNEL) \
	    --junitxml=results/junit-nightly-$$config.xml $(PYTEST_ARGS) || status=1; \
	done; \
	$(TB) kernel build --kernel-config debug-full --no-base-fixes $(if $(KSRC),--ksrc $(KSRC)) $(if $(PATCHES),--patches $(PATCHES)) && \
	$(PYTEST) tests/vm -q -m hotunplug --accel $(ACCEL) --kernel-config debug-full --no-base-fixes $(PYTEST_KERNEL) \
	  --results-dir results/nightly-no-base-fixes --junitxml=results/junit-nightly-no-base-fixes.xml $(PYTEST_ARGS) || status=1; \
	rm -rf results/nightly-coverage; \
	$(PYTEST) tests -q --accel $(ACCEL) --coverage --results-dir results/nightly-coverage $(PYTEST_KERNEL) \
	  --junitxml=results/junit-nightly-coverage.xml $(PYTEST_ARGS) || status=1; \
	$(TB) mutate --coverage-run results/nightly-coverage --sample $(NIGHTLY_MUTANTS) --seed $(NIGHTLY_SEED) \
	  --out results/nightly-mutate $(if $(KSRC),--ksrc $(KSRC)) -- -m "$(SUITES)" || status=1; \
	exit $$status

BENCH_OUT := results/bench/$(shell date +%Y%m%d-%H%M%S).jsonl
bench: deps venv ## measure boots, kernel and QEMU rebuilds, a fresh cache to green, every suite, concurrent launches (~75 min); regenerate README's timing table
	$(TB) kernel build --kernel-config debug
	@mkdir -p results/bench
	$(VENV)/bin/python bench/boot --json >> $(BENCH_OUT)
	$(VENV)/bin/python bench/boot --json --order alternate >> $(BENCH_OUT)
	$(VENV)/bin/python bench/boot --json --kernel-config debug --runs 3 >> $(BENCH_OUT)
	$(VENV)/bin/python bench/rebuild --json >> $(BENCH_OUT)
	$(VENV)/bin/python bench/rebuild --first-series --check-clean --json >> $(BENCH_OUT)
	$(VENV)/bin/python bench/qemu-build --json >> $(BENCH_OUT)
	$(VENV)/bin/python bench/fresh --json --jobs $(JOBS) >> $(BENCH_OUT)
	$(VENV)/bin/python bench/suites --json --jobs $(JOBS) >> $(BENCH_OUT)
	$(VENV)/bin/python bench/suites --json --jobs 1 make-test >> $(BENCH_OUT)
	$(VENV)/bin/python bench/suites --json --jobs $(JOBS) make-test >> $(BENCH_OUT)
	$(VENV)/bin/python bench/suites --json --jobs $(JOBS) --kernel-config debug hotunplug >> $(BENCH_OUT)
	$(VENV)/bin/python bench/launches --json >> $(BENCH_OUT) || true
	$(VENV)/bin/python bench/table --add $(BENCH_OUT) --update README.md

clean-results: ## remove results/ (console logs, JUnit)
	rm -rf results

clean-cache: venv ## delete cached kernels/images unused for 14 days and builds nothing needs (`testbed cache`)
	$(TB) cache prune
