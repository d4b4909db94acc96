# The two commands of the README. Both install what they need first.
PYTHON ?= python3

.PHONY: setup demo test test-fast bench

setup:
	bash deploy/setup.sh
	$(PYTHON) -m vmroc.cli image build --kernel-flavour all

demo: setup
	PYTHON=$(PYTHON) bash deploy/demo.sh

test: setup
	$(PYTHON) -m pytest tests

test-fast:
	$(PYTHON) -m pytest tests/unit

bench: setup
	$(PYTHON) bench/bench_lab.py
