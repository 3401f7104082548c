# tritonscale container image: the adapter service and nothing else.
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/tritonscale/tritonscale:v0.2.0 .
# Releases are built, signed and pushed by .github/workflows/release.yml on a `v*` tag.
#
# Runtime: gcr.io/distroless/python3-debian12 (Debian 12's python3.11, no shell, no package
# manager, no pip), user 65532. Build: debian:12-slim, whose python3.11 is the same Debian
# package, so the venv made here runs there unchanged (its bin/python links to
# /usr/bin/python3.11 in both images). Both bases are pinned by the digest of their
# multi-arch index; Renovate (renovate.json) proposes new digests.
#
# Dependencies: requirements/runtime.lock only (`make lock`): every version pinned, every
# file hashed, installed with --require-hashes --no-deps --only-binary=:all:, so the build
# compiles nothing and installs nothing the lock does not name. The service's own code
# (adapter/, policies/) is copied as source and run with `python -m adapter`; the harness
# (loadtest/), the extras and the tests are not in the image.

FROM docker.io/library/debian:12-slim@sha256:88200866dfff7ea7f5cbcb6ec7c8a701889efe6fe859fe64d6990e4b07ea4171 AS build
# python3-venv brings python3.11 and its ensurepip wheels (pip, setuptools); both are
# removed from the venv again below, after they installed the lock.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN /usr/bin/python3.11 -m venv /opt/venv
# The dependency layer stays cached while only the sources change.
COPY requirements/runtime.lock /tmp/runtime.lock
RUN /opt/venv/bin/pip install --no-deps --require-hashes --only-binary=:all: -r /tmp/runtime.lock \
 && /opt/venv/bin/pip uninstall --yes pip setuptools
COPY adapter /opt/tritonscale/adapter
COPY policies /opt/tritonscale/policies
# Bytecode now: the root filesystem is read-only at run time. unchecked-hash: the .pyc files
# stay valid whatever timestamps the layers end up with.
RUN /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/tritonscale

FROM gcr.io/distroless/python3-debian12:nonroot@sha256:7d1042ce588ab97019fe95c24ffca7bc5a82ccdac572511d5e09bda4435c89c5 AS runtime
LABEL org.opencontainers.image.title="tritonscale" \
      org.opencontainers.image.description="Predictive Kubernetes external-metrics adapter for Triton Inference Server" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/tritonscale /opt/tritonscale
# HOME points into /tmp: the root filesystem is read-only in Kubernetes.
ENV PYTHONPATH=/opt/tritonscale \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# 65532 is distroless' "nonroot" user; numeric, so runAsNonRoot can check it.
USER 65532:65532
EXPOSE 6443
# Health is checked by the Kubernetes probes (/livez, /readyz over HTTPS), not by Docker.
HEALTHCHECK NONE
ENTRYPOINT ["/opt/venv/bin/python", "-m", "adapter"]
CMD ["serve", "--config", "/etc/tritonscale/config.yaml"]
