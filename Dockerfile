# chargebus: `chargebus run` by default; the same image runs `chargebus bridge modbus` and
# `chargebus sim` (docker-compose.yml). Build context: the repository root.
FROM python:3.11-slim

# Logs reach `docker logs` at once; no .pyc writes at run time (site-packages is root's).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY bridges ./bridges
# A fixed uid, so a bind-mounted data directory can be chowned to it on the host. The
# sources go once installed: a `service/` in the working directory would shadow the installed
# package for `python -c` (the health check).
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home --home-dir /data --shell /usr/sbin/nologin chargebus \
    && mkdir -p /data && chown chargebus:chargebus /data \
    && rm -rf /app/service /app/bridges

# Nothing runs as root: a flaw in the HTTP adapter must not own the container.
USER chargebus
ENV CHARGEBUS_DATA_DIR=/data CHARGEBUS_HTTP_HOST=0.0.0.0 CHARGEBUS_HTTP_PORT=8080
VOLUME ["/data"]
EXPOSE 8080

# get_params answers without a login and only when the service is up (its state loaded, the
# HTTP adapter serving). The bridge and sim services in docker-compose.yml serve no HTTP and
# switch this off.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CHARGEBUS_HTTP_PORT', '8080') + '/cnf?cmd=get_params', timeout=4)"]

ENTRYPOINT ["chargebus"]
CMD ["run"]
