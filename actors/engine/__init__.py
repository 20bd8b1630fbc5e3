"""actors.engine.context: see docs/architecture.md."""
