# PayRescue service image: `payrescue run` behind a health check.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PAYRESCUE_HOST=0.0.0.0 \
    PAYRESCUE_PORT=8080 \
    PAYRESCUE_DATA_DIR=/data \
    PAYRESCUE_LOCALES_DIR=/app/locales

WORKDIR /app
COPY pyproject.toml README.md ./
COPY payrescue ./payrescue
COPY bot ./bot
COPY handoff ./handoff
COPY locales ./locales
# the project itself, with the lower bounds its pyproject declares
# hadolint ignore=DL3013
RUN pip install ".[postgres,redis]" \
    && useradd --system --uid 10001 --home-dir /data --create-home payrescue

USER 10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["payrescue", "run"]
