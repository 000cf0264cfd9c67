-- The hash-chained audit (docs/audit.md): chain columns, and a version so the first stored row wins.
--
-- Each record a worker writes carries its chain (chain_id: one per partition of the stage that wrote it),
-- its sequence number in it (chain_seq) and the hash of the chain's previous record (chain_prev);
-- checkpoints (event_type 'checkpoint') carry the attested hash (chain_hash) and the workers' signature
-- (chain_signature). Unchained rows (outcomes, the SDK's own events, policy events) have chain_id ''.
--
-- Deduplication: ReplacingMergeTree(version) keeps, among rows with the same sorting key, the one with
-- the highest version, and version *falls* with the time of insertion (and with the row's place in
-- its insert), so the first stored copy wins: a later forged row with the same key never replaces it
-- at merge time. The key is (event_id, chain_id, chain_seq): a copy re-read after a sink crash is the
-- same row and collapses; a record a worker wrote twice after a redelivery (same event id, its own
-- place in the chain) is kept twice, as the chain needs (reports count an event id once, see 0002).
--
-- The engine and its key cannot be altered, so the table is rebuilt: the views that read it are
-- dropped, the rows copied into the new table, the two swapped and the views created again (a view
-- follows its table across a rename). migrate.py records each statement done, so a run that stopped
-- half way resumes after the last one. Cluster variant: as in 0001, with
-- ReplicatedReplacingMergeTree(..., version), sharded by cityHash64(request_id).
CREATE TABLE IF NOT EXISTS {db}.audit_events_v4
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
    determining Array(LowCardinality(String)),
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
    chain_id LowCardinality(String),
    chain_seq UInt64,
    chain_prev String,
    chain_hash String,
    chain_signature String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    version UInt64 DEFAULT 18446744073709551615
        - (toUInt64(toUnixTimestamp64Milli(now64(3))) * 65536 + rowNumberInBlock() % 65536),
    INDEX idx_request_id request_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_chain chain_id TYPE set(1024) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(event_time)
ORDER BY (event_id, chain_id, chain_seq)
TTL toDateTime(event_time) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 8192;

DROP VIEW IF EXISTS {db}.decision_events_mv;
DROP VIEW IF EXISTS {db}.decision_determining_mv;
DROP VIEW IF EXISTS {db}.approval_latency_mv;

INSERT INTO {db}.audit_events_v4 (event_id, event_type, event_time, request_id, agent_id, agent_role,
    agent_owner, environment, tool, action, target, params, labels, occurred_at, traceparent, policy_name,
    policy_version, decision, decision_final, reasons, rules, determining, risk_score, risk_factors,
    approver_group, approval_quorum, approval_requested_at, approval_deadline_at, approved_by, reviewer,
    verdict, verdict_reason, verdict_source, verdict_at, outcome_status, outcome_error, outcome_duration_ms,
    fail_open, note, source_topic, source_partition, source_offset, ingested_at)
SELECT event_id, event_type, event_time, request_id, agent_id, agent_role,
    agent_owner, environment, tool, action, target, params, labels, occurred_at, traceparent, policy_name,
    policy_version, decision, decision_final, reasons, rules, determining, risk_score, risk_factors,
    approver_group, approval_quorum, approval_requested_at, approval_deadline_at, approved_by, reviewer,
    verdict, verdict_reason, verdict_source, verdict_at, outcome_status, outcome_error, outcome_duration_ms,
    fail_open, note, source_topic, source_partition, source_offset, ingested_at
FROM {db}.audit_events ORDER BY ingested_at;

EXCHANGE TABLES {db}.audit_events AND {db}.audit_events_v4;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.decision_events_mv TO {db}.decision_events AS
WITH (
    SELECT (toStartOfMinute(min(event_time)), toStartOfMinute(max(event_time)))
    FROM {db}.audit_events WHERE event_type = 'decision'
) AS span
SELECT
    toStartOfMinute(event_time) AS minute,
    event_id,
    event_time,
    agent_id,
    tool,
    decision,
    decision_final,
    risk_score,
    least(toUInt8(floor(risk_score * 5)), 4) AS risk_bucket,
    risk_factors
FROM {db}.audit_events
WHERE event_type = 'decision'
  AND (minute, event_id) NOT IN (
      SELECT minute, event_id FROM {db}.decision_events WHERE minute BETWEEN span.1 AND span.2)
LIMIT 1 BY event_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.decision_determining_mv TO {db}.decision_determining AS
WITH (
    SELECT (toStartOfMinute(min(event_time)), toStartOfMinute(max(event_time)))
    FROM {db}.audit_events WHERE event_type = 'decision'
) AS span
SELECT
    toStartOfMinute(event_time) AS minute,
    event_id,
    event_time,
    decision,
    decision_final,
    determining
FROM {db}.audit_events
WHERE event_type = 'decision'
  AND (minute, event_id) NOT IN (
      SELECT minute, event_id FROM {db}.decision_determining WHERE minute BETWEEN span.1 AND span.2)
LIMIT 1 BY event_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.approval_latency_mv TO {db}.approval_latency AS
SELECT
    request_id,
    max(agent_id) AS agent_id,
    max(tool) AS tool,
    max(approver_group) AS approver_group,
    min(if(event_type = 'approval_requested', approval_requested_at, NULL)) AS requested_at,
    max(approval_deadline_at) AS deadline_at,
    max(if(event_type = 'verdict_accepted', verdict_at, NULL)) AS verdict_at,
    max(if(event_type = 'verdict_accepted', verdict, '')) AS verdict
FROM {db}.audit_events
WHERE event_type IN ('approval_requested', 'verdict_accepted')
GROUP BY request_id;

DROP TABLE IF EXISTS {db}.audit_events_v4;
