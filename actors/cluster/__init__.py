"""actors.cluster: see docs/architecture.md."""
