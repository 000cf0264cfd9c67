"""Downstream of decisions: the ClickHouse audit sink and the Slack reviewer bot."""
