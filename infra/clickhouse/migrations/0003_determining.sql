-- What determined each decision (Decision.determining), and its rollup for the report's top block reasons.
--
-- audit_events gains the column (empty for events stored before it existed). decision_determining holds
-- the determining of every decision event exactly once, by the rule of decision_events (0002): its view
-- passes on only the events of an inserted block whose (minute, event_id) is not stored yet, one row
-- per event_id. It is a table of its own rather than a column of decision_events, so no view is dropped
-- and recreated (a sink inserting meanwhile would lose rows). determining_per_minute sums it by minute;
-- reports read it for whole minutes and decision_determining for the partial minutes at a window's edges.
-- Decisions stored before this migration are in neither.
ALTER TABLE {db}.audit_events ADD COLUMN IF NOT EXISTS determining Array(LowCardinality(String)) AFTER rules;

CREATE TABLE IF NOT EXISTS {db}.decision_determining
(
    minute DateTime('UTC'),
    event_id String,
    event_time DateTime64(3, 'UTC'),
    decision LowCardinality(String),
    decision_final Bool,
    determining Array(LowCardinality(String))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, event_id)
TTL minute + INTERVAL {ttl_days} DAY;

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

CREATE TABLE IF NOT EXISTS {db}.determining_per_minute
(
    minute DateTime('UTC'),
    decision LowCardinality(String),
    decision_final Bool,
    determining Array(LowCardinality(String)),
    decisions SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, decision, decision_final, determining)
TTL minute + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.determining_per_minute_mv TO {db}.determining_per_minute AS
SELECT
    minute,
    decision,
    decision_final,
    determining,
    count() AS decisions
FROM {db}.decision_determining
GROUP BY minute, decision, decision_final, determining;
