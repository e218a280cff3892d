# emd-pipeline — every target installs what it needs on first use (a .venv, Debian's GOST engine, PostgreSQL).
#   make run     the whole pipeline on a local broker and the РЭМД emulator, with the Ministry samples
#   make test    the test suite (real broker, real HTTP, OpenSSL as the independent GOST verifier, PostgreSQL),
#                on parallel workers; `make coverage` is the same with the coverage figure at the end
#   make test-fast  the unit tests only (no broker, PostgreSQL or emd process): about a minute
#   make bench   speed figures: micro-benchmarks, then `emd bench` (appended to docs/benchmarks.md)
#   make reliability  the long scenario tests (marker `long`), then the whole-system run: 2,000 documents, kill -9
#                of every component, faults (docs/reliability.md)
#   make lint    the gate: ruff check, ruff format --check, mypy (strict for producer/ and services/messaging/)
#   make image   the container image (Dockerfile) with buildah, smoke-tested (deploy/image/smoke.sh), its SBOM in
#                build/sbom.cdx.json and its digest in build/image.digest
#   make lock    re-resolve the image's hash-locked requirements (deploy/image/*.txt) after a dependency change
#   make manifests  rewrite the generated files: Kubernetes manifests (KafkaTopics, KafkaUsers, PrometheusRule),
#                   docs/asyncapi.yaml and docs/asyncapi.html (`make docs` rewrites only the last two)
#   make node-deps  the pinned npm tools (tools/*/package-lock.json): the AsyncAPI CLI, the Node МИС example

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml producer/pyproject.toml lab/pyproject.toml | cksum | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := libengine-gost-openssl gostsum prometheus chromium-headless-shell
IMAGE   ?= emd-pipeline:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: install system-deps node-deps run test test-fast bench reliability lint clean image lock manifests docs screenshot

install: $(STAMP) system-deps

$(STAMP): pyproject.toml producer/pyproject.toml lab/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e ./producer -e '.[test]' -e './lab[test]'
	@rm -f $(VENV)/.installed-* && touch $@
	@echo "installed: $(VENV) (the three distributions, editable: producer/, the pipeline, lab/)"

# The tests verify our GOST signatures with an independent implementation: OpenSSL's GOST engine.
# They run the lifecycle store against a throwaway PostgreSQL server (tests/postgres_server.py): Debian's
# `postgresql`, installed only when no initdb is found (on PATH or in /usr/lib/postgresql/*/bin). The live
# metrics test starts its own Prometheus: the service Debian's package enables (port 9090) is turned off.
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	{ command -v node && command -v npm; } >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  case "$$missing" in *prometheus*) $(SUDO) systemctl disable --now prometheus >/dev/null 2>&1 || true;; esac; \
	fi

# The npm tools the tests run (tools/asyncapi: @asyncapi/cli validates docs/asyncapi.yaml; tools/mis-node: a МИС
# written in JavaScript). `npm ci` installs exactly the lock file, preferring npm's cache (~/.npm) to the network
# and running no install script; the stamp makes a second run free until the lock file changes.
NODE_TOOLS := asyncapi mis-node
NODE_STAMPS := $(foreach t,$(NODE_TOOLS),tools/$(t)/node_modules/.emd-installed)
node-deps: $(NODE_STAMPS)

tools/%/node_modules/.emd-installed: tools/%/package.json tools/%/package-lock.json
	@command -v npm >/dev/null 2>&1 || $(MAKE) -s system-deps
	@cd tools/$* && npm ci --prefer-offline --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
	@touch $@
	@echo "installed: tools/$*/node_modules (npm ci, from tools/$*/package-lock.json)"

# РЭМД (the emulator) refuses about one document in ten, as a real registry refuses some: the run shows dead
# letters with their MessageIDs and signed requests, which `emd dlq show` reads afterwards
run: install
	@$(VENV)/bin/emd run --scenario rejections

# The suite on TEST_WORKERS pytest-xdist workers (DEVELOPERS.md has the measurements behind the default): each
# worker has its own broker, PostgreSQL server, ports and data directory (tests/conftest.py). `--dist loadgroup`
# hands out one test at a time, slow ones first, except the tests an xdist_group keeps on one worker. The `long`
# scenarios run in `make reliability` instead (tests/conftest.py).
TEST_WORKERS ?= 4
TEST_SELECTION ?= not long
test: install node-deps
	@$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "$(TEST_SELECTION)" $(PYTEST_ARGS)

# `make test` measuring coverage (branches too) in every Python process the tests start (pyproject.toml
# [tool.coverage]), combined, its total printed last; `.venv/bin/coverage report` then shows it file by file.
# Tracing every process costs time, so it is a target of its own.
coverage: install node-deps
	@$(PY) -m coverage erase
	@status=0; $(PY) -m coverage run -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "$(TEST_SELECTION)" $(PYTEST_ARGS) || status=$$?; \
	$(PY) -m coverage combine -q && \
	echo "coverage: $$($(PY) -m coverage report --format=total) % of the statements and branches of services, workers, producer and lab (every emd process the tests started included)"; \
	exit $$status

# The unit tests: every test not marked integration (tests/conftest.py says what the marker means). They are CPU
# work, so one worker per core; `--dist loadfile` builds each module's fixtures (keys, PKIs) once, not per worker.
FAST_WORKERS ?= auto
test-fast: install
	@$(PY) -m pytest -n $(FAST_WORKERS) --dist loadfile -m "not integration" $(PYTEST_ARGS)

# BENCH_ARGS: options for `emd bench` (default the issue-#10 run: 3000 documents, with the stage ceilings)
BENCH_ARGS ?= --documents 3000
reliability: install node-deps
	@$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m long $(PYTEST_ARGS)
	@$(PY) -m tests.reliability

bench: install
	@$(PY) bench/run_all.py
	@$(VENV)/bin/emd bench $(BENCH_ARGS)

# the gate, run by .ci/run before the tests; it needs the venv only (no Debian packages, no broker)
LINT_PATHS := services producer workers lab tests bench
lint: $(STAMP)
	@$(VENV)/bin/ruff check $(LINT_PATHS)
	@$(VENV)/bin/ruff format --check $(LINT_PATHS)
	@$(VENV)/bin/mypy

# buildah builds without a daemon (vfs storage, chroot isolation: works unprivileged-ish in CI sandboxes too).
# With no registry reachable, the base image is made from Debian's packages (deploy/image/debian-base.sh).
# The host's CA bundle is lent to the build, for PyPI behind a TLS-inspecting proxy.
image:
	@command -v buildah >/dev/null || { echo "installing buildah"; $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null; }
	@export STORAGE_DRIVER=vfs; \
	buildah inspect --type image docker.io/library/debian:bookworm-slim >/dev/null 2>&1 \
	  || buildah pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1 \
	  || $(SUDO) deploy/image/debian-base.sh; \
	buildah bud --isolation chroot --pull=false --layers -q \
	  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/build-ca.pem:ro --build-arg PIP_CERT=/etc/ssl/certs/build-ca.pem \
	  -t $(IMAGE) . && deploy/image/smoke.sh $(IMAGE) \
	  && mkdir -p build && deploy/image/sbom.sh $(IMAGE) build/sbom.cdx.json \
	  && buildah images --no-trunc --digests --format '{{.Digest}}' $(IMAGE) | head -1 > build/image.digest \
	  && echo "image $(IMAGE)@$$(cat build/image.digest), SBOM build/sbom.cdx.json. Push it with" \
	  && echo "  buildah push --digestfile build/image.digest $(IMAGE) docker://REGISTRY/emd/emd-pipeline" \
	  && echo "and write the pushed digest (build/image.digest) into deploy/k8s/overlays/prod/kustomization.yaml (images: digest)."

# the image's dependencies, resolved and hash-locked (every transitive one) for pip --require-hashes
lock: install
	@cd deploy/image && ../../$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links --strip-extras -o requirements.txt requirements.in
	@cd deploy/image && ../../$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links -o sbom-tools.txt sbom-tools.in

manifests: install docs
	@$(PY) -m lab.dev.manifests

# docs/asyncapi.yaml and its page docs/asyncapi.html, from producer/topology.py and the schemas (tests/test_asyncapi.py
# fails when they are out of date)
docs: $(STAMP)
	@$(PY) -m lab.dev.asyncapi

# the live Prometheus test, keeping its screenshot of the throughput graph as docs/images/prometheus-throughput.png
screenshot: install
	@EMD_UPDATE_SCREENSHOT=1 $(PY) -m pytest -q tests/test_prometheus_live.py

clean:
	rm -rf $(VENV) .emd-data .pytest_cache .ruff_cache build .coverage .coverage.* tools/*/node_modules
