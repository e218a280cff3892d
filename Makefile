# emd-pipeline — every target installs what it needs on first use (a .venv, Debian's GOST engine, PostgreSQL).
#   make run     the whole pipeline on a local broker and the РЭМД emulator, with the Ministry samples
#   make test    the test suite (real broker, real HTTP, OpenSSL as the independent GOST verifier, PostgreSQL)
#   make bench   speed figures (recorded in docs/benchmarks.md)
#   make lint    ruff

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := libengine-gost-openssl gostsum

.PHONY: install system-deps run test bench lint clean

install: $(STAMP) system-deps

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@
	@echo "installed: $(VENV) (pinned dependencies of pyproject.toml)"

# The tests verify our GOST signatures with an independent implementation: OpenSSL's GOST engine.
# They run the lifecycle store against a throwaway PostgreSQL server (tests/postgres_server.py): Debian's
# `postgresql`, installed only when no initdb is found (on PATH or in /usr/lib/postgresql/*/bin).
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

run: install
	@$(VENV)/bin/emd run

test: install
	@$(PY) -m pytest

bench: install
	@$(PY) bench/run_all.py

lint: install
	@$(VENV)/bin/ruff check services producer workers tests bench

clean:
	rm -rf $(VENV) .emd-data .pytest_cache .ruff_cache
