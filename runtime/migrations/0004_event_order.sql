-- Events hold together under faults: a per-aggregate sequence given at outbox-write time, a retry
-- schedule per stuck row (its aggregate waits, others go on), an operator's skip with the reason,
-- and per consumer the last applied sequence of each aggregate (stale events are not applied).
CREATE TABLE outbox_sequences (
    topic text NOT NULL,
    aggregate_key text NOT NULL,
    last_sequence bigint NOT NULL,
    PRIMARY KEY (topic, aggregate_key)
);

ALTER TABLE outbox
    ADD COLUMN sequence bigint,
    ADD COLUMN retry_at timestamptz,
    ADD COLUMN skipped_at timestamptz,
    ADD COLUMN skip_reason text,
    ADD COLUMN skipped_by text;

DROP INDEX outbox_unsent;
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL AND skipped_at IS NULL;
CREATE INDEX outbox_pending_aggregate ON outbox (topic, aggregate_key, id) WHERE sent_at IS NULL AND skipped_at IS NULL;

CREATE INDEX inbox_received_at ON inbox (received_at);

CREATE TABLE inbox_sequences (
    consumer text NOT NULL,
    aggregate text NOT NULL,
    sequence bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, aggregate)
);
