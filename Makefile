# Two commands matter: `make demo` and `make test` (both as root on Debian 12).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_HOSTS ?= 4

.PHONY: demo test system venv clean bench

# Debian packages the lab and the tests need (sshd for lab hosts; the rest is usually there).
system:
	@command -v /usr/sbin/sshd >/dev/null && command -v unshare >/dev/null || { \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    openssh-server openssh-client util-linux git sqlite3 python3 python3-venv; }

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Start lab hosts, check them against this checkout's example source, show the drift.
demo: system venv
	$(BIN)/fleet lab up --hosts $(DEMO_HOSTS)
	$(BIN)/fleet check --no-diff; test $$? -le 2
	$(BIN)/fleet status --diff
	@echo
	@echo "Next: $(BIN)/fleet converge --yes, then $(BIN)/fleet check (exit 0: in sync)."
	@echo "Stop the lab with: $(BIN)/fleet lab down"

test: system venv
	$(BIN)/python -m pytest

clean:
	-$(BIN)/fleet lab down
	rm -rf .fleet

# Benchmarks (not part of the tests): fleet vs plain ansible-playbook and ARA, ingestion,
# history pages, memory. Writes bench/RESULTS.md. Takes about 20 minutes; run it on a quiet machine.
bench: system venv
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.run
