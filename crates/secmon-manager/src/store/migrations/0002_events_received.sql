-- `secmon events --follow` reads by arrival time (received_since), so that events
-- whose own time is long past (an agent's spool sent after an outage) still show.
CREATE INDEX events_received ON events (received_ns);
