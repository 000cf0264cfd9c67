-- Materialized views for dashboards: decisions per minute and approval latency.
--
-- Both aggregate idempotently, so a batch stored twice across a sink crash does not inflate them:
-- decisions per minute count distinct event ids (uniqExact), approval latency keeps min/max times.
-- Cluster variant: Replicated* engines for the target tables, as for audit_events.
CREATE TABLE IF NOT EXISTS {db}.decisions_per_minute
(
    minute DateTime('UTC'),
    tool LowCardinality(String),
    agent_id LowCardinality(String),
    decision LowCardinality(String),
    decisions AggregateFunction(uniqExact, String),
    risk_sum SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, tool, agent_id, decision)
TTL minute + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.decisions_per_minute_mv TO {db}.decisions_per_minute AS
SELECT
    toStartOfMinute(event_time) AS minute,
    tool,
    agent_id,
    decision,
    uniqExactState(event_id) AS decisions,
    sum(risk_score) AS risk_sum
FROM {db}.audit_events
WHERE event_type = 'decision'
GROUP BY minute, tool, agent_id, decision;

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
