# One image for both services: `docker run IMAGE router` (the default) or `docker run IMAGE admin`.

# The modules on every webhook's path compiled with mypyc (scripts/compile), in an image with a
# C compiler. Compiling type-checks them, against the project's dependencies installed here.
FROM python:3.11 AS compiled
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml /src/
COPY store /src/store
COPY httpkit /src/httpkit
COPY router /src/router
COPY scripts/compile /src/scripts/compile
RUN pip install /src "mypy>=1.10" "msgpack-types>=0.3" && /src/scripts/compile

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
# The compiled modules beside the installed sources they were built from (the same Python, and
# the same Debian release under both images), copied after them so that they are the newer.
ARG SITE=/usr/local/lib/python3.11/site-packages
COPY --from=compiled /src/*__mypyc.*.so $SITE/
COPY --from=compiled /src/httpkit/*.so $SITE/httpkit/
COPY --from=compiled /src/router/*.so $SITE/router/
COPY --from=compiled /src/store/*.so $SITE/store/

# The spool (AGENTVER_SPOOL_DIR, .data/spool) is relative to here; mount a volume on it.
WORKDIR /app
USER agentver
EXPOSE 8080 8081

# Migrations are idempotent and serialised by an advisory lock, so every container may run them.
# The service name is $0 and its options follow (`router --workers 2`).
ENTRYPOINT ["sh", "-c", "python -m store migrate && exec python -m \"$0\" \"$@\""]
CMD ["router"]
