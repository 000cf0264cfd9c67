-- Rollups for reports and dashboards, exact even when an event is stored twice.
--
-- decision_events holds every decision event exactly once: its materialized view passes on only the
-- events of an inserted block whose (minute, event_id) is not stored yet, looking up just the minutes
-- the block covers (a retried or re-read batch is recent, so this reads a few minutes of keys), and
-- one row per event_id within the block. decisions_per_minute sums decision_events, so its counts and
-- sums are exact without FINAL; reports read it for whole minutes and decision_events for the
-- partial minutes at a window's edges. This assumes one writer per event at a time, which the sink
-- guarantees (every event of a request comes from one topic partition, consumed by one sink).
-- approval_latency keeps min/max times per request, which a duplicate cannot change.
-- Cluster variant: Replicated* engines for the target tables, as for audit_events, sharded like it.
CREATE TABLE IF NOT EXISTS {db}.decision_events
(
    minute DateTime('UTC'),
    event_id String,
    event_time DateTime64(3, 'UTC'),
    agent_id LowCardinality(String),
    tool LowCardinality(String),
    decision LowCardinality(String),
    decision_final Bool,
    risk_score Float64,
    risk_bucket UInt8,
    risk_factors Map(LowCardinality(String), Float64)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, event_id)
TTL minute + INTERVAL {ttl_days} DAY;

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

CREATE TABLE IF NOT EXISTS {db}.decisions_per_minute
(
    minute DateTime('UTC'),
    agent_id LowCardinality(String),
    tool LowCardinality(String),
    decision LowCardinality(String),
    decision_final Bool,
    risk_bucket UInt8,
    decisions SimpleAggregateFunction(sum, UInt64),
    risk_sum SimpleAggregateFunction(sum, Float64),
    factors SimpleAggregateFunction(sumMap, Map(String, Float64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, agent_id, tool, decision, decision_final, risk_bucket)
TTL minute + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.decisions_per_minute_mv TO {db}.decisions_per_minute AS
SELECT
    minute,
    agent_id,
    tool,
    decision,
    decision_final,
    risk_bucket,
    count() AS decisions,
    sum(risk_score) AS risk_sum,
    sumMap(CAST(risk_factors, 'Map(String, Float64)')) AS factors
FROM {db}.decision_events
GROUP BY minute, agent_id, tool, decision, decision_final, risk_bucket;

CREATE TABLE IF NOT EXISTS {db}.approval_latency
(
    request_id UUID,
    agent_id SimpleAggregateFunction(max, LowCardinality(String)),
    tool SimpleAggregateFunction(max, LowCardinality(String)),
    approver_group SimpleAggregateFunction(max, LowCardinality(String)),
    requested_at SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    deadline_at SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC'))),
    verdict_at SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC'))),
    verdict SimpleAggregateFunction(max, LowCardinality(String))
)
ENGINE = AggregatingMergeTree
ORDER BY request_id;

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
