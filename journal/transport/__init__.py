"""journal.transport: see docs/architecture.md."""
