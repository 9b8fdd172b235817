"""aiohttp plumbing both services share: JSON bodies and errors, bearer-token auth."""
