"""actors.sdk: see docs/architecture.md."""
