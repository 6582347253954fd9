-- The waiting room at on-sale scale (issue 17, defect 2): a Random queue's
-- prequeue is no longer rewritten at its shuffle. A prequeue buyer's place is
-- π(seq), computed from queue_state.shuffle_seed by every pod (and by the
-- admitter through π⁻¹, for the slots it admits); from here on queue.slot is
-- never rewritten and equals seq (rows a shuffle wrote before this migration
-- keep their slot, which is π(seq) too).
--
-- queue_admitted is one row per admitted buyer, written by the admission step
-- that admitted them: the slot they were admitted at and who they are. It is
-- what the admitter's count of active buyers scans (the slots admitted
-- within passTTL), since a shuffled slot is no longer a column of queue.

-- +goose Up
CREATE TABLE queue_admitted (
    slot     bigint PRIMARY KEY,
    buyer_id text   NOT NULL
);
INSERT INTO queue_admitted (slot, buyer_id)
SELECT q.slot, q.buyer_id FROM queue q, queue_state s WHERE q.slot <= s.serving_slot
ON CONFLICT (slot) DO NOTHING;

-- +goose Down
DROP TABLE queue_admitted;
