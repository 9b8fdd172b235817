"""What a voice-agent runtime imports: `agentver.client`, the typed client of the router's
runtime lookups and the admin service's analysis endpoint."""
