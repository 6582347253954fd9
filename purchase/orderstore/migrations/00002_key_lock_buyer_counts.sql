-- Two fixes to confirm_purchase (issue 10):
--
-- * Concurrent retries of one idempotency key meet under the key, not on a
--   seat: the key is locked (a transaction-scoped advisory lock on its hash)
--   before it is looked up, so a retry that picked another seat (any-seat
--   purchases) waits for the first attempt and replays its order, instead of
--   colliding on the (buyer, key) constraint or the buyer limit.
-- * Every order counts in buyers, whatever the limit, so raising the limit
--   mid-sale (from 0, or after it was 0 for a while) counts the orders bought
--   before. The buyers that bought before this migration are counted here.

-- +goose Up
INSERT INTO buyers (buyer_id, tickets)
    SELECT buyer_id, count(*) FROM orders GROUP BY buyer_id
ON CONFLICT (buyer_id) DO UPDATE SET tickets = excluded.tickets;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION confirm_purchase(p_ticket bigint, p_order uuid, p_buyer text, p_key text, p_max int)
RETURNS TABLE (replayed boolean, order_id uuid, ticket_id bigint, buyer_id text, purchased_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF p_key IS NOT NULL THEN
        -- Held until commit; a hash collision only makes two keys wait for
        -- each other. Each statement below takes a new snapshot (READ
        -- COMMITTED), so after the wait it sees the first attempt's order.
        PERFORM pg_advisory_xact_lock(hashtextextended(p_buyer || '/' || p_key, 0));
        RETURN QUERY SELECT true, o.id, o.ticket_id, o.buyer_id, o.purchased_at
            FROM orders o WHERE o.buyer_id = p_buyer AND o.idempotency_key = p_key;
        IF FOUND THEN RETURN; END IF;
    END IF;

    -- The fence: only one transaction can flip a seat from unsold to sold,
    -- whatever happened to the Redis lock meanwhile.
    UPDATE tickets SET sold = true WHERE id = p_ticket AND NOT sold;
    IF NOT FOUND THEN
        -- DETAIL names the owning order so the caller can write Redis's sold
        -- marker without another query.
        RAISE EXCEPTION 'ticket % is sold', p_ticket USING ERRCODE = 'FO001',
            DETAIL = coalesce((SELECT o.id::text FROM orders o WHERE o.ticket_id = p_ticket), '');
    END IF;

    -- Counted under every limit (0 = unlimited), refused past a limit.
    INSERT INTO buyers AS b (buyer_id, tickets) VALUES (p_buyer, 1)
    ON CONFLICT ON CONSTRAINT buyers_pkey DO UPDATE SET tickets = b.tickets + 1
        WHERE p_max = 0 OR b.tickets < p_max;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'buyer % reached the limit of % tickets', p_buyer, p_max USING ERRCODE = 'FO002';
    END IF;

    UPDATE sold_counter SET sold = sold + 1 WHERE shard = p_ticket % 64;

    RETURN QUERY INSERT INTO orders AS o (id, ticket_id, buyer_id, idempotency_key)
        VALUES (p_order, p_ticket, p_buyer, p_key)
        RETURNING false, o.id, o.ticket_id, o.buyer_id, o.purchased_at;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- The function of 00001 is restored by re-running its body; buyers keeps
-- its extra rows (harmless under limit 0).
SELECT 1;
