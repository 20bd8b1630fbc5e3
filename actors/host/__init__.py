"""actors.host.object_host: see docs/architecture.md."""
