-- The audit events table: one row per audited event (decision, approval request, verdict, outcome).
--
-- Placeholders: {db} is the database, {ttl_days} the retention in days.
--
-- Deduplication: ReplacingMergeTree keyed (through the ORDER BY) by event_id, so `SELECT ... FINAL`
-- (or argMax by event_id) sees one row per event even when a batch was stored twice across a sink
-- crash; non_replicated_deduplication_window makes a plain MergeTree honour the sink's
-- insert_deduplication_token, so a batch retried in the same process is dropped at insert time.
--
-- Cluster (replicated) variant: create the database ON CLUSTER and replace the engine with
--   ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/audit_events', '{replica}')
-- (drop the non_replicated_deduplication_window setting: replicated tables deduplicate insert
-- tokens through Keeper by default, replicated_deduplication_window), and put a
-- Distributed(cluster, {db}, audit_events, cityHash64(request_id)) table in front for the sink to
-- insert into; sharding by request_id keeps every event of a request, and its duplicates, on one shard.
CREATE TABLE IF NOT EXISTS {db}.audit_events
(
    event_id String,
    event_type LowCardinality(String),
    event_time DateTime64(3, 'UTC'),
    request_id UUID,
    agent_id LowCardinality(String),
    agent_role LowCardinality(String),
    agent_owner LowCardinality(String),
    environment LowCardinality(String),
    tool LowCardinality(String),
    action LowCardinality(String),
    target String,
    params String CODEC(ZSTD(1)),
    labels Map(LowCardinality(String), String),
    occurred_at Nullable(DateTime64(3, 'UTC')),
    traceparent String,
    policy_name LowCardinality(String),
    policy_version LowCardinality(String),
    decision LowCardinality(String),
    decision_final Bool,
    reasons Array(String),
    rules Array(LowCardinality(String)),
    risk_score Float64,
    risk_factors Map(LowCardinality(String), Float64),
    approver_group LowCardinality(String),
    approval_quorum UInt32,
    approval_requested_at Nullable(DateTime64(3, 'UTC')),
    approval_deadline_at Nullable(DateTime64(3, 'UTC')),
    approved_by Array(String),
    reviewer LowCardinality(String),
    verdict LowCardinality(String),
    verdict_reason String,
    verdict_source LowCardinality(String),
    verdict_at Nullable(DateTime64(3, 'UTC')),
    outcome_status LowCardinality(String),
    outcome_error String,
    outcome_duration_ms Nullable(Float64),
    fail_open Bool,
    note String,
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_request_id request_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (agent_id, tool, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 8192;
