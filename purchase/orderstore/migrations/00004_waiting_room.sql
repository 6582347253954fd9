-- The waiting room (issue 11). Its truth is here, not in Redis: losing
-- Redis's data loses nobody's place.
--
-- A buyer's place is their slot: the join sequence number (FIFO), or for a
-- Random queue's prequeue (joined before the shuffle at startsAt) a keyed
-- permutation of it over 1..prequeue_seq, written by the shuffle. Admission
-- moves serving_slot forward: every buyer whose slot is at or below it is
-- admitted, so the order across pods is the order of slots.

-- +goose Up
CREATE SEQUENCE queue_seq;

CREATE TABLE queue (
    buyer_id  text        PRIMARY KEY,
    seq       bigint      NOT NULL UNIQUE,
    slot      bigint      NOT NULL,  -- not unique: the shuffle swaps slots within one UPDATE
    joined_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX queue_slot ON queue (slot);

CREATE TABLE queue_state (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),  -- exactly one row
    serving_slot  bigint  NOT NULL DEFAULT 0,
    admitted      bigint  NOT NULL DEFAULT 0,   -- buyers admitted, ever
    waiting       bigint  NOT NULL DEFAULT 0,   -- as last counted by the admitter
    shuffle_seed  bytea,                        -- Random: set once, at the shuffle
    prequeue_seq  bigint                        -- Random: seqs 1..this were shuffled
);
INSERT INTO queue_state DEFAULT VALUES;

-- One row per admission step: pods learn from it when a slot was admitted,
-- hence when its pass expires, without asking per buyer.
CREATE TABLE queue_admissions (
    id           bigserial   PRIMARY KEY,
    from_slot    bigint      NOT NULL,  -- slots (from_slot, serving_slot] were admitted
    serving_slot bigint      NOT NULL,
    admitted     bigint      NOT NULL,  -- buyers admitted by this step
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX queue_admissions_at ON queue_admissions (at);

-- +goose Down
DROP TABLE queue_admissions;
DROP TABLE queue_state;
DROP TABLE queue;
DROP SEQUENCE queue_seq;
