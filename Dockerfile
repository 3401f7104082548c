# tritonscale container image.
#   docker build -t tritonscale:0.1.0 .
# Runtime: the installed package only (no dev extras, no nvidia-pytriton; the adapter does
# not run Triton). Runs as the non-root user 65532 with a read-only root filesystem in
# manifests/base; /tmp is the only writable path (an emptyDir there).
# For reproducible builds pin the base image by digest: python:3.11-slim@sha256:<digest>.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Runtime dependencies first, read from pyproject.toml: this layer stays cached while only
# the sources change ...
COPY pyproject.toml README.md ./
RUN pip install --upgrade pip setuptools wheel \
 && python -c "import subprocess, sys, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
subprocess.check_call([sys.executable, '-m', 'pip', 'install', *deps])"
# ... then the packages setuptools finds (adapter*, policies*, loadtest*), installed regularly
# (not editable) without extras: no simulator, load generator or Triton in the image.
COPY adapter ./adapter
COPY policies ./policies
COPY loadtest ./loadtest
RUN pip install --no-deps . \
 && python -m compileall -q /opt/venv/lib

FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="tritonscale" \
      org.opencontainers.image.description="Predictive Kubernetes external-metrics adapter for Triton Inference Server" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
# HOME points into /tmp: the root filesystem is read-only in Kubernetes.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# 65532 is the conventional "nonroot" uid/gid (distroless); no passwd entry is needed.
USER 65532:65532
EXPOSE 6443
# Health is checked by the Kubernetes probes (/livez, /readyz over HTTPS), not by Docker.
HEALTHCHECK NONE
ENTRYPOINT ["tritonscale"]
CMD ["serve", "--config", "/etc/tritonscale/config.yaml"]
