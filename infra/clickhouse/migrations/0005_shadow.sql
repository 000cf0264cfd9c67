-- Shadow decisions: what a published shadow policy would have decided (streams/stages/shadow.py), stored in
-- audit_events like every event, as event_type 'shadow_decision' with the shadow's decision, rules,
-- determining, policy version and (for a REQUIRE_APPROVAL) the reviewer group in approver_group.
-- `sluicegate policy shadow-report` pairs each with the first 'decision' event of its request.
--
-- Most of the time no shadow is published and none of a window's granules holds a shadow decision: a set
-- index on event_type lets the report (and any query on one kind of event) skip them. Parts written
-- before this migration are not indexed (no mutation is run); they are read as before.
ALTER TABLE {db}.audit_events ADD INDEX IF NOT EXISTS idx_event_type event_type TYPE set(32) GRANULARITY 1;
