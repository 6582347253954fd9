-- Leaving the line (issue 17): DELETE /v1/queue/{queueId}. A buyer who
-- leaves loses their queue row (the admitter passes over their slot as over
-- any seq no row holds; a re-join queues them again at the back) and, once
-- admitted, their queue_admitted row (they no longer count as active).
--
-- queue_left tells every pod who left, so that a poll of the old queue id
-- answers queue_not_found and the old pass buys nothing; pods read the rows
-- after the last they saw, as they read admission steps.
--
-- queue_state.released counts the active buyers who left: the admitter
-- takes it off its count of active buyers at its next step, so the seat
-- budget a leaver held is given to the next buyer at once rather than at
-- the next recount.

-- +goose Up
CREATE TABLE queue_left (
    id       bigserial   PRIMARY KEY,
    buyer_id text        NOT NULL,
    seq      bigint      NOT NULL,
    left_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE queue_state ADD COLUMN released bigint NOT NULL DEFAULT 0;
-- A leave finds the buyer's admission by buyer, not by the slot its pod's
-- view would compute (a view may lag the admission by a refresh).
CREATE INDEX queue_admitted_buyer ON queue_admitted (buyer_id);

-- +goose Down
DROP INDEX queue_admitted_buyer;
ALTER TABLE queue_state DROP COLUMN released;
DROP TABLE queue_left;
