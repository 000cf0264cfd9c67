"""The pure, deterministic decision engine: no Kafka, no clock, no globals."""
