# Two commands for a fresh machine: `make demo` (set up, then compile and benchmark the example model) and
# `make test` (set up, then the whole test suite). Everything is installed by scripts/, never by hand.
VENV ?= .venv
PY := $(VENV)/bin/python
# Tests run in parallel: 2 workers on this 2-core machine; override with `make test JOBS=4`.
JOBS ?= 2

.PHONY: install system-deps demo test lint bench clean

install:
	@scripts/install.sh

# Debian packages the test farm needs (OpenSSH servers, nftables, qemu-user, mmdebstrap, Chromium).
system-deps:
	@scripts/install-system.sh

demo: install
	$(VENV)/bin/edgec demo

lint: install
	$(VENV)/bin/ruff check .

test: install system-deps lint
	# The three large zoo graphs convert to TFLite in a few minutes: CI runs them too.
	EDGEC_PRUNE_ZOO_TFLITE=all $(PY) -m pytest -n $(JOBS) --dist loadgroup -p no:cacheprovider tests

bench: install
	$(PY) -m benchmarks

clean:
	rm -rf build .pytest_cache
