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

# Every benchmark (~20 min); each script also runs alone, see bench/*.py --help.
bench: setup
	$(PYTHON) bench/bench_lab.py
	$(PYTHON) bench/bench_symbols.py
	$(PYTHON) bench/bench_sampler.py
	$(PYTHON) bench/bench_bus.py
	$(PYTHON) -m vmroc.cli lab up --name bench --guests 3
	$(PYTHON) bench/bench_inject.py --lab bench && $(PYTHON) bench/bench_campaign.py --lab bench; rc=$$?; \
	  $(PYTHON) -m vmroc.cli lab down --name bench; exit $$rc
