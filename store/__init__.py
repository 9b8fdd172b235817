"""Persistence for agentver: schema, repository, config validation, cache and change feed."""
