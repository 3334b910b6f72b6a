# The suite in a container: the campaign (llm-loadtest), Locust master or worker, the report and
# the exporter, all from one image. Build: make image (docker build -t llm-loadsuite:latest .).
# Run:   docker run --rm llm-loadsuite:latest                      (the campaign's --help)
#        docker run --rm -v "$PWD/my.toml:/config/endpoints.toml:ro" -v "$PWD/results:/app/results" \
#            llm-loadsuite:latest llm-loadtest --endpoints-file /config/endpoints.toml
#        docker run --rm --network host llm-loadsuite:latest \
#            python -m locustfiles.remote_worker --master-host HOST     (a worker host)
# Compose and Kubernetes files using it: deploy/compose/loadtest.yml, deploy/k8s/;
# docs/several-machines.md explains them.
#
# One stage: every runtime dependency ships as a manylinux wheel, so nothing is compiled and a
# build stage would only copy the same files over. The base is pinned to the Python minor
# version the suite is tested on (the patch release and Debian updates follow the tag).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib

# A fixed, non-root user (uid/gid 10001). USER names it by number, so Kubernetes' runAsNonRoot
# can check it; deploy/k8s sets runAsUser and fsGroup to it, so a results volume is writable.
RUN groupadd --gid 10001 loadsuite \
    && useradd --uid 10001 --gid loadsuite --create-home --shell /usr/sbin/nologin loadsuite

# The sources stay in /app (read-only for the user): Locust is started with the locustfiles'
# relative paths (locust -f locustfiles/users.py,...) and endpoints.toml is the default config.
# .dockerignore keeps venvs, results, caches, tests and docs out of the build context.
WORKDIR /app
COPY . .
# The suite and its runtime packages only (not the test extra); results/ is where the campaign
# and Locust write run directories (mount a volume there to keep them).
RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info \
    && mkdir -p results \
    && chown loadsuite:loadsuite results

USER 10001:10001

# No ENTRYPOINT, so any of the suite's commands can be given (llm-loadtest, locust,
# llm-report, llm-gpu-exporter); without one, the campaign's help.
CMD ["llm-loadtest", "--help"]
