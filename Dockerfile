FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY bridges ./bridges
RUN pip install --no-cache-dir . && useradd --system --home /data chargebus \
    && mkdir -p /data && chown chargebus /data
USER chargebus
ENV CHARGEBUS_DATA_DIR=/data CHARGEBUS_HTTP_HOST=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/cnf?cmd=get_params', timeout=4)" || exit 1
ENTRYPOINT ["chargebus"]
CMD ["run"]
