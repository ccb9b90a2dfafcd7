# signproxy container image.
#
#   docker build -t signproxy:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9090:9090 -e SCP_ACCESS_KEY -e SCP_SECRET_KEY \
#       signproxy:0.1.0 --listen 0.0.0.0:8080 --metrics-listen 0.0.0.0:9090 \
#       --upstream https://object-store.kr-west1.e.samsungsdscloud.com ...
#
# The proxy listens on 127.0.0.1 unless told otherwise: that suits a sidecar
# (one network namespace per pod); publishing a port needs --listen 0.0.0.0:8080.
# tests/test_dockerfile.py lints this file and replays its pip steps.

# -- builder: wheels for signproxy and every dependency ------------------------
FROM python:3.12-slim-bookworm AS builder

WORKDIR /src
COPY pyproject.toml README.md ./
COPY signproxy ./signproxy
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels /src

# -- runtime: the wheels installed into a venv; no compilers, no build tools ---
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/signproxy/bin:$PATH \
    HOME=/tmp

COPY --from=builder /wheels /wheels
RUN python -m venv /opt/signproxy \
    && /opt/signproxy/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/signproxy-*.whl \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 signproxy \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin signproxy

# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp

# 8080: the S3 proxy port; 9090: the management port (--metrics-listen).
EXPOSE 8080 9090

# SIGTERM drains in-flight requests, then the process exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["signproxy", "run"]
