-- The schema of one sale's database. Postgres is the source of truth: the
-- constraints here, not the Redis lock, make a double sale impossible.

-- +goose Up
CREATE TABLE inventory (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),  -- exactly one row
    tickets bigint  NOT NULL CHECK (tickets >= 0)
);
INSERT INTO inventory (tickets) VALUES (0);

CREATE TABLE tickets (
    id      bigint   PRIMARY KEY,
    sold    boolean  NOT NULL DEFAULT false
);

CREATE TABLE orders (
    id              uuid        PRIMARY KEY,
    ticket_id       bigint      NOT NULL REFERENCES tickets (id),
    buyer_id        text        NOT NULL,
    idempotency_key text,
    purchased_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT orders_ticket_id_key UNIQUE (ticket_id),
    CONSTRAINT orders_buyer_id_idempotency_key_key UNIQUE (buyer_id, idempotency_key)
);

-- Tickets bought per buyer, only written when the sale has a per-buyer limit.
CREATE TABLE buyers (
    buyer_id text PRIMARY KEY,
    tickets  int  NOT NULL
);

-- Sold count, sharded so concurrent confirmations rarely wait on one row, and
-- summed (64 rows) instead of counting the orders table.
CREATE TABLE sold_counter (
    shard int    PRIMARY KEY,
    sold  bigint NOT NULL DEFAULT 0
);
INSERT INTO sold_counter (shard) SELECT generate_series(0, 63);

-- confirm_purchase is the whole confirmation in one statement, hence one
-- round trip and one implicit transaction: any RAISE undoes every write.
-- SQLSTATE FO001 = seat already sold, FO002 = buyer limit reached.
-- +goose StatementBegin
CREATE FUNCTION confirm_purchase(p_ticket bigint, p_order uuid, p_buyer text, p_key text, p_max int)
RETURNS TABLE (replayed boolean, order_id uuid, ticket_id bigint, buyer_id text, purchased_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF p_key IS NOT NULL THEN
        RETURN QUERY SELECT true, o.id, o.ticket_id, o.buyer_id, o.purchased_at
            FROM orders o WHERE o.buyer_id = p_buyer AND o.idempotency_key = p_key;
        IF FOUND THEN RETURN; END IF;
    END IF;

    -- The fence: only one transaction can flip a seat from unsold to sold,
    -- whatever happened to the Redis lock meanwhile.
    UPDATE tickets SET sold = true WHERE id = p_ticket AND NOT sold;
    IF NOT FOUND THEN
        IF p_key IS NOT NULL THEN
            -- A concurrent retry with the same key may have just committed
            -- (READ COMMITTED: this statement sees it).
            RETURN QUERY SELECT true, o.id, o.ticket_id, o.buyer_id, o.purchased_at
                FROM orders o WHERE o.buyer_id = p_buyer AND o.idempotency_key = p_key;
            IF FOUND THEN RETURN; END IF;
        END IF;
        -- DETAIL names the owning order so the caller can write Redis's sold
        -- marker without another query.
        RAISE EXCEPTION 'ticket % is sold', p_ticket USING ERRCODE = 'FO001',
            DETAIL = coalesce((SELECT o.id::text FROM orders o WHERE o.ticket_id = p_ticket), '');
    END IF;

    IF p_max > 0 THEN
        INSERT INTO buyers AS b (buyer_id, tickets) VALUES (p_buyer, 1)
        ON CONFLICT ON CONSTRAINT buyers_pkey DO UPDATE SET tickets = b.tickets + 1
            WHERE b.tickets < p_max;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'buyer % reached the limit of % tickets', p_buyer, p_max USING ERRCODE = 'FO002';
        END IF;
    END IF;

    UPDATE sold_counter SET sold = sold + 1 WHERE shard = p_ticket % 64;

    RETURN QUERY INSERT INTO orders AS o (id, ticket_id, buyer_id, idempotency_key)
        VALUES (p_order, p_ticket, p_buyer, p_key)
        RETURNING false, o.id, o.ticket_id, o.buyer_id, o.purchased_at;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION confirm_purchase(bigint, uuid, text, text, int);
DROP TABLE sold_counter;
DROP TABLE buyers;
DROP TABLE orders;
DROP TABLE tickets;
DROP TABLE inventory;
