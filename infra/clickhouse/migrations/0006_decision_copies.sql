-- decision_events and decision_determining hold a decision event once even when its copies carry
-- different times.
--
-- A decision can be audited twice with different event times: a worker stalled past its session
-- timeout (a GC pause, a frozen VM, SIGSTOP) resumes and delivers the records already in its producer,
-- while the partition's new owner has decided the same intent again from the same state: the same event
-- id and place in the chain, the same decision, a later (or earlier) event_time. audit_events keeps one
-- (its key is (event_id, chain_id, chain_seq)), but the views of 0002/0004 looked an event up by
-- (minute, event_id): two copies in different minutes were both passed on (chaos run K: 2 requests
-- twice in decision_events, copies 7 s apart across a minute boundary).
--
-- The views now pass on an event whose event_id is not stored within 5 minutes either side of the
-- inserted block's minutes (a copy can come before or after the first stored one). The lookup reads
-- the event ids of those minutes (at 500 decisions/s about 150,000 per minute, sorted by minute first);
-- copies further apart than that (a stall of more than 5 minutes) are still stored twice.
-- The views are dropped and created again (an insert between the two statements is not rolled up:
-- run `sluicegate audit migrate` with the sinks stopped, as for 0004).
DROP VIEW IF EXISTS {db}.decision_events_mv;
DROP VIEW IF EXISTS {db}.decision_determining_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.decision_events_mv TO {db}.decision_events AS
WITH (
    SELECT (toStartOfMinute(min(event_time)) - INTERVAL 5 MINUTE,
            toStartOfMinute(max(event_time)) + INTERVAL 5 MINUTE)
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
  AND event_id NOT IN (
      SELECT event_id FROM {db}.decision_events WHERE minute BETWEEN span.1 AND span.2)
LIMIT 1 BY event_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.decision_determining_mv TO {db}.decision_determining AS
WITH (
    SELECT (toStartOfMinute(min(event_time)) - INTERVAL 5 MINUTE,
            toStartOfMinute(max(event_time)) + INTERVAL 5 MINUTE)
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
  AND event_id NOT IN (
      SELECT event_id FROM {db}.decision_determining WHERE minute BETWEEN span.1 AND span.2)
LIMIT 1 BY event_id;
