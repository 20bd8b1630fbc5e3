"""actors.client.runtime: see docs/architecture.md."""
