"""The call-routing worker: provider webhooks in, a variant and version out, every call tagged."""
