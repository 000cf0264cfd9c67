"""sluicegate: the agent-facing SDK and the command line."""

__all__: list[str] = []
