"""Tests of infra: the Kafka launcher, the ClickHouse opener, and a smoke test of both."""
