"""sluicegate tests."""
