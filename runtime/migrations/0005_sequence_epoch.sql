-- After a restore to an earlier time, an aggregate's numbers started again below what consumers had
-- applied (their inboxes are in other databases, not restored), and every new event was skipped as
-- stale until the numbers caught up. Each number given is at least the epoch plus one; an operator
-- raises the epoch once after a restore (`python -m runtime outbox-restored`), above anything given
-- before it.
CREATE TABLE outbox_epoch (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch bigint NOT NULL
);
INSERT INTO outbox_epoch (singleton, epoch) VALUES (true, 0);
