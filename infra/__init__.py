"""How the real components start: the local Kafka launcher, ClickHouse access and DDL."""
