"""The admin API: agents, drafts, versions, channels, audit."""
