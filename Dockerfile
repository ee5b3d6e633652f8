# openbayes-serving in production mode: port 80, a non-root user, SIGTERM drains.
#
# Build from the repository root. APP is the predictor directory copied to /app
# (default: the basic template), EXTRAS the package extras (onnx, gpu, torch; "" for none):
#
#   docker build -t openbayes-serving .
#   docker build -t my-classifier --build-arg APP=examples/image-classifier-onnx .
#
# Run it (port 80 inside, 8080 outside). Give docker stop more than the 30 s drain:
#
#   docker run --rm -p 8080:80 --stop-timeout 45 my-classifier
#
# Or keep one image and mount a predictor directory over /app (read-only is enough):
#
#   docker run --rm -p 8080:80 --stop-timeout 45 -v "$PWD":/app:ro openbayes-serving
#
# Port 80 as a non-root user: Docker 20.10 and later let containers bind low ports
# (they set net.ipv4.ip_unprivileged_port_start=0 in the container's network
# namespace). With older engines or Podman add
# `--sysctl net.ipv4.ip_unprivileged_port_start=0`; the Kubernetes manifests in
# deploy/kubernetes set the same sysctl. No file capability is put on python:
# Kubernetes' allowPrivilegeEscalation: false ignores one, and it would make the
# dynamic loader drop LD_LIBRARY_PATH, which CUDA images rely on.
#
# Models: production mode looks for the .onnx under OPENBAYES_SERVING_MODEL_PATH, set
# to /app here (the platform's default is /mnt/project; pass -e to use that instead).

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG EXTRAS=onnx
ARG APP=templates/basic

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The runtime first, so that changing the predictor does not reinstall it.
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY openbayes_serving ./openbayes_serving
COPY templates ./templates
RUN pip install "/src${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /src \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/serving \
       --shell /usr/sbin/nologin serving

# The predictor directory, and the packages it lists in requirements.txt (as root).
COPY ${APP} /app
RUN if [ -f /app/requirements.txt ]; then pip install -r /app/requirements.txt; fi

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
ENV HOME=/home/serving \
    OPENBAYES_SERVING_PRODUCTION=1 \
    OPENBAYES_SERVING_MODEL_PATH=/app
WORKDIR /app
EXPOSE 80

# /healthz answers while the model loads, so the start period only covers the import.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:80/healthz', timeout=4)"]

# Exec form, no shell: the server is PID 1 and gets SIGTERM itself (run replaces the
# process with predictor.py's server, or with `bash start.sh`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["openbayes-serving", "run", "/app"]
