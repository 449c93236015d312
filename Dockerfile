# PayRescue service image: `payrescue run` behind a health check.
# Every Python package comes from the lock (requirements/*.txt, exported from uv.lock by
# `make lock`), hash-checked; the base is pinned by exact tag and by digest, so a rebuild next
# quarter gets what the tests passed with. Upgrading the base: README "Upgrading dependencies".
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS base

# Build stage: the locked dependencies into /venv, then PayRescue as a wheel beside them.
# /venv has no pip or setuptools of its own; this stage's pip installs into it.
FROM base AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY requirements/build.txt requirements/server.txt ./requirements/
RUN python -m venv --without-pip /venv \
    && pip install --require-hashes --no-deps -r requirements/build.txt \
    && pip --python /venv/bin/python install --require-hashes -r requirements/server.txt
COPY pyproject.toml README.md ./
COPY payrescue ./payrescue
COPY bot ./bot
COPY handoff ./handoff
COPY mail ./mail
# built by the locked setuptools just installed, not an isolated (unpinned) one
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && pip --python /venv/bin/python install --no-deps /wheels/payrescue-*.whl

# What runs: the venv and the catalogs, nothing from the build.
FROM base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/venv/bin:$PATH \
    PAYRESCUE_HOST=0.0.0.0 \
    PAYRESCUE_PORT=8080 \
    PAYRESCUE_DATA_DIR=/data \
    PAYRESCUE_LOCALES_DIR=/app/locales
RUN useradd --system --uid 10001 --home-dir /data --create-home payrescue
COPY --from=build /venv /venv
COPY locales /app/locales
WORKDIR /app

USER 10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["payrescue", "run"]
