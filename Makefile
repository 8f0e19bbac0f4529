# Two commands matter: `make demo` and `make test` (both as root on Debian 12).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_HOSTS ?= 4

.PHONY: demo demo-stop test test-fast lint system venv clean bench

# Debian packages the lab and the tests need (sshd for lab hosts; redis-server and PostgreSQL for the
# scale-out tests, which start their own broker; sudo, acl and the Python libraries for the compatibility
# corpus's modules on the lab hosts (tests/compat); the rest is usually there).
system:
	@command -v /usr/sbin/sshd >/dev/null && command -v unshare >/dev/null && command -v gpg >/dev/null && command -v systemd-analyze >/dev/null && command -v redis-server >/dev/null && command -v pg_ctlcluster >/dev/null && test -x /usr/bin/chromium && command -v sudo >/dev/null && command -v setfacl >/dev/null && command -v patch >/dev/null && command -v sysctl >/dev/null && command -v ss >/dev/null && /usr/bin/python3 -c 'import lxml, passlib, psutil, apt, cryptography' 2>/dev/null || { \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    openssh-server openssh-client util-linux git gnupg sqlite3 python3 python3-venv chromium systemd redis-server postgresql \
	    sudo acl patch procps iproute2 python3-lxml python3-passlib python3-psutil python3-apt python3-cryptography; }

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Start lab hosts and `fleet serve` (controller + web UI) in the background; the controller checks
# the hosts on its own. The first time, an admin account is made with a generated password, shown once.
DEMO_BIND ?= 127.0.0.1:8080
DEMO_ADMIN ?= admin
DEMO_DATA := .fleet


demo: system venv
	$(BIN)/fleet lab up --hosts $(DEMO_HOSTS)
	@set -e; \
	if $(BIN)/fleet user list --role admin >/dev/null; then \
	  login="an admin exists already; its password was shown when it was made (new one: $(BIN)/fleet user add $(DEMO_ADMIN) --role admin --generate)"; \
	else \
	  password=$$($(BIN)/fleet user add $(DEMO_ADMIN) --role admin --generate | sed -n 's/^password (shown once): //p'); \
	  [ -n "$$password" ] || { echo "could not create the admin account"; exit 1; }; \
	  login="log in as $(DEMO_ADMIN) with password $$password (shown once; fleet keeps only its hash)"; \
	fi; \
	if [ -f $(DEMO_DATA)/serve.pid ] && kill -0 $$(cat $(DEMO_DATA)/serve.pid) 2>/dev/null; then \
	  echo "fleet serve is running already (pid $$(cat $(DEMO_DATA)/serve.pid))"; \
	else \
	  FLEET_BIND=$(DEMO_BIND) setsid $(BIN)/fleet serve >>$(DEMO_DATA)/serve.log 2>&1 </dev/null & echo $$! >$(DEMO_DATA)/serve.pid; \
	fi; \
	for i in $$(seq 120); do \
	  $(BIN)/python -c "import urllib.request; urllib.request.urlopen('http://$(DEMO_BIND)/api/v1/healthz', timeout=2)" 2>/dev/null && break; \
	  kill -0 $$(cat $(DEMO_DATA)/serve.pid) 2>/dev/null || { tail -20 $(DEMO_DATA)/serve.log; echo "fleet serve stopped; see $(DEMO_DATA)/serve.log"; exit 1; }; \
	  sleep 0.5; \
	done; \
	echo; \
	echo "fleet is up: http://$(DEMO_BIND)"; \
	echo "  $$login"; \
	echo "  the controller is checking the $(DEMO_HOSTS) lab hosts now (about a minute); log: $(DEMO_DATA)/serve.log"; \
	echo "  stop it all with: make demo-stop"

demo-stop:
	@if [ -f $(DEMO_DATA)/serve.pid ]; then \
	  pid=$$(cat $(DEMO_DATA)/serve.pid); \
	  if kill -0 $$pid 2>/dev/null; then kill -TERM $$pid; \
	    for i in $$(seq 60); do kill -0 $$pid 2>/dev/null || break; sleep 0.5; done; fi; \
	  rm -f $(DEMO_DATA)/serve.pid; echo "fleet serve stopped"; \
	fi
	-$(BIN)/fleet lab down

# With FLEET_TEST_DATABASE_URL set (.ci/run sets it), the store-touching suites run a second time on that
# PostgreSQL database; the first run is SQLite's whatever the environment says. Tests marked sqlite_only keep
# SQLite even then, so the second run leaves them out: they would only repeat the first run exactly.
PG_TESTS ?= tests/unit/test_store_*.py tests/unit/test_controller.py \
	tests/unit/test_jobs.py tests/unit/test_migrations.py tests/unit/test_executor_shard.py \
	tests/web \
	tests/integration/test_check_converge.py::test_fresh_hosts_drift_converge_then_in_sync_then_hand_edit_drifts \
	tests/integration/test_upgrade.py tests/unit/test_jobs_bytes.py tests/integration/test_bytes.py

# The SQLite run spreads test files over TEST_WORKERS processes (pytest-xdist; tests/conftest.py keeps files that
# share a lab subnet together); in the PostgreSQL run each worker has a database of its own (<name>_gw0, ...).
TEST_WORKERS ?= 3
test: system venv lint
	env -u FLEET_TEST_DATABASE_URL $(BIN)/python -m pytest -n $(TEST_WORKERS)
	@if [ -n "$$FLEET_TEST_DATABASE_URL" ]; then \
	  echo "again on PostgreSQL: $(PG_TESTS)"; \
	  $(BIN)/python -m pytest -n 2 -p no:cacheprovider -m 'not sqlite_only' $(PG_TESTS); \
	fi

# Unit and web tests only: no root, no lab hosts, no browser.
test-fast: venv lint
	$(BIN)/python -m pytest -n 2 tests/unit tests/web

# ruff (settings in pyproject.toml): lint and format of the product's code, checked, never rewritten here.
lint: venv
	$(BIN)/ruff check fleet web
	$(BIN)/ruff format --check fleet web
	$(BIN)/mypy

clean:
	-$(BIN)/fleet lab down
	rm -rf .fleet

# Benchmarks (not part of the tests): fleet vs plain ansible-playbook and ARA, ingestion,
# history pages, memory, fleet vs raw Mitogen, scale-out on workers. Writes bench/RESULTS.md. Takes about 90 minutes;
# run it on a quiet machine.
bench: system venv
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.run
