# One image for both services: `docker run IMAGE router` (the default) or `docker run IMAGE admin`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml /src/
COPY store /src/store
COPY httpkit /src/httpkit
COPY admin /src/admin
COPY router /src/router
RUN pip install /src \
    && rm -rf /src \
    && useradd --system --no-create-home agentver \
    && mkdir -p /app/.data/spool \
    && chown -R agentver /app/.data

# The spool (AGENTVER_SPOOL_DIR, .data/spool) is relative to here; mount a volume on it.
WORKDIR /app
USER agentver
EXPOSE 8080 8081

# Migrations are idempotent and serialised by an advisory lock, so every container may run them.
# The service name is $0 and its options follow (`router --workers 2`).
ENTRYPOINT ["sh", "-c", "python -m store migrate && exec python -m \"$0\" \"$@\""]
CMD ["router"]
