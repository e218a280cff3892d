# The emd-pipeline image: every worker, the callback service and the tools, `emd` as the entrypoint.
#
# Debian bookworm's own Python 3.11, because it is linked against Debian's OpenSSL 3, into which the
# GOST provider and engine of `libengine-gost-openssl` load (services/crypto/libcrypto.py: C-speed Streebog,
# GOST signatures and PFX ciphers); a python.org build would carry its own libcrypto without it. Runs as an unprivileged
# user (10001) with a read-only root filesystem: the only writable places are /var/lib/emd (EMD_DATA_DIR:
# heartbeat files, the SQLite lifecycle store of a one-node install) and /tmp (mount an emptyDir on both).
#
#   make image                      buildah, podman or docker, whichever is installed
#   docker run --rm --read-only --tmpfs /tmp -v emd:/var/lib/emd emd-pipeline:0.1.0 worker signer

ARG DEBIAN=debian:bookworm-slim

FROM ${DEBIAN} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# PIP_CERT: a CA bundle mounted for the build when PyPI is reached through a TLS-inspecting proxy (make image)
ARG PIP_CERT=
# Every third-party package first, each pinned with its sha256 (deploy/image/requirements.txt, `make lock`):
# pip refuses anything unhashed or unlisted, transitive dependencies included, so the image holds exactly what
# was locked.
COPY deploy/image/requirements.txt deploy/image/sbom-tools.txt /tmp/lock/
RUN python3 -m venv /opt/emd \
 && /opt/emd/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_CERT:+--cert "$PIP_CERT"} \
      --require-hashes -r /tmp/lock/requirements.txt
# the deployable only: producer/ (the contract) and the pipeline, without their dependencies (locked above) and
# with the locked build backend (no build isolation: nothing fetched unpinned); lab/ (emulator, dev PKI, test
# broker, samples) never enters the image. Compiled to .pyc here, since the root filesystem is read-only at run
# time.
COPY pyproject.toml README.md ./
COPY services services
COPY producer producer
COPY workers workers
RUN /opt/emd/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation ./producer . \
 && /opt/emd/bin/python -m compileall -q /opt/emd/lib
# The SBOM of what /opt/emd holds (CycloneDX, every Python distribution with its version and licence), made by a
# generator in a venv of its own that stays in this stage; `make image` adds the Debian packages of the final
# image to it (deploy/image/sbom.py).
RUN python3 -m venv /opt/sbom-tools \
 && /opt/sbom-tools/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_CERT:+--cert "$PIP_CERT"} \
      --require-hashes -r /tmp/lock/sbom-tools.txt \
 && /opt/sbom-tools/bin/cyclonedx-py environment --pyproject pyproject.toml --output-reproducible \
      --output-format JSON --output-file /opt/emd-python.cdx.json /opt/emd/bin/python

FROM ${DEBIAN}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libengine-gost-openssl ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/emd --shell /usr/sbin/nologin emd \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/emd
COPY --from=build /opt/emd /opt/emd
COPY --from=build /opt/emd-python.cdx.json /usr/share/doc/emd-pipeline/sbom-python.cdx.json
ENV PATH=/opt/emd/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EMD_DATA_DIR=/var/lib/emd \
    EMD_LOG_FORMAT=json \
    EMD_METRICS_HOST=0.0.0.0 \
    EMD_METRICS_PORT=9100
USER 10001:10001
WORKDIR /var/lib/emd
VOLUME ["/var/lib/emd"]
EXPOSE 9100 8086
ENTRYPOINT ["emd"]
CMD ["--help"]
