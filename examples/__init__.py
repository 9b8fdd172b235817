"""Example voice-agent runtimes wired to agentver (not shipped in the package)."""
