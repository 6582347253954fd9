-- Seat holds (issue 11): a buyer holds a seat for holdTTL while paying, then
-- confirms (an order) or releases it; unconfirmed, it expires by itself.
--
-- A seat is held iff NOT sold AND held_until > clock_timestamp(): an expired
-- hold frees the seat without any write (lazy), and the next hold or
-- purchase overwrites it. The seat's row is the fence for holds exactly as
-- for sales: one conditional UPDATE decides, whatever Redis says.
--
-- changed_xid is pg_current_xact_id() of the last statement that changed the
-- seat's sold or held state, for the sale page's seat-change feed (poll
-- changed_xid >= the previous poll's snapshot xmin: gap-free whatever the
-- commit order).
--
-- holds is the durable record of every hold: it makes confirm idempotent
-- (a repeat finds state 'confirmed' and its order) and lets a confirm after
-- expiry answer 410 rather than 404. 'expired' is not stored: it is a 'held'
-- row past expires_at.
--
-- Error codes (SQLSTATE, DETAIL for the caller):
--   FO001 seat sold                 DETAIL: the owning order id, or ''
--   FO002 buyer limit reached       DETAIL: the buyer's orders (without holds)
--   FO003 seat held by a live hold  DETAIL: '<hold id> <expires_at unix ms>'
--   FO004 no such hold, or not this buyer's
--   FO005 hold expired or released  DETAIL: 'expired' or 'released'

-- +goose Up
ALTER TABLE tickets
    ADD COLUMN hold_id     uuid,
    ADD COLUMN held_by     text,
    ADD COLUMN held_until  timestamptz,
    ADD COLUMN changed_xid xid8;
CREATE INDEX tickets_changed_xid ON tickets (changed_xid);
-- Only seats with a hold (live or lazily expired) are in it: counting live
-- holds is a range scan over live holds, not over the inventory.
CREATE INDEX tickets_held_until ON tickets (held_until) WHERE held_until IS NOT NULL;

CREATE TABLE holds (
    id          uuid        PRIMARY KEY,
    ticket_id   bigint      NOT NULL REFERENCES tickets (id),
    buyer_id    text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    state       text        NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'confirmed', 'released')),
    order_id    uuid,
    payment_ref text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((state = 'confirmed') = (order_id IS NOT NULL))
);
-- The buyer limit counts a buyer's live holds: 'held' rows only (an expired
-- one is filtered by expires_at; a buyer has few).
CREATE INDEX holds_buyer_held ON holds (buyer_id) WHERE state = 'held';

ALTER TABLE orders
    ADD COLUMN hold_id     uuid REFERENCES holds (id),
    ADD COLUMN payment_ref text,
    ADD CONSTRAINT orders_hold_id_key UNIQUE (hold_id);

-- check_buyer_limit raises FO002 unless the buyer has fewer than p_max
-- tickets counted: orders plus live holds. It serialises a buyer's holds and
-- purchases on the buyer's row, locked before the holds are counted; each
-- statement of a plpgsql function takes a new snapshot (READ COMMITTED), so
-- a concurrent hold of the same buyer is either waited for and counted, or
-- not yet begun.
-- +goose StatementBegin
CREATE FUNCTION check_buyer_limit(p_buyer text, p_max int) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_orders int;
    v_held   int;
BEGIN
    INSERT INTO buyers (buyer_id, tickets) VALUES (p_buyer, 0) ON CONFLICT (buyer_id) DO NOTHING;
    SELECT b.tickets INTO v_orders FROM buyers b WHERE b.buyer_id = p_buyer FOR UPDATE;
    SELECT count(*) INTO v_held FROM holds h
        WHERE h.buyer_id = p_buyer AND h.state = 'held' AND h.expires_at > clock_timestamp();
    IF v_orders + v_held >= p_max THEN
        RAISE EXCEPTION 'buyer % reached the limit of % tickets', p_buyer, p_max USING ERRCODE = 'FO002',
            DETAIL = v_orders::text;
    END IF;
END
$$;
-- +goose StatementEnd

-- refuse_seat raises why a seat's fence refused: FO003 naming the live hold
-- (DETAIL lets the caller put Redis's hold marker back), else FO001 naming
-- the order (for Redis's sold marker).
-- +goose StatementBegin
CREATE FUNCTION refuse_seat(p_ticket bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_t tickets%ROWTYPE;
BEGIN
    SELECT * INTO v_t FROM tickets t WHERE t.id = p_ticket;
    IF NOT v_t.sold THEN
        RAISE EXCEPTION 'ticket % is held', p_ticket USING ERRCODE = 'FO003',
            DETAIL = coalesce(v_t.hold_id::text || ' ' || floor(extract(epoch FROM v_t.held_until) * 1000)::bigint, '');
    END IF;
    RAISE EXCEPTION 'ticket % is sold', p_ticket USING ERRCODE = 'FO001',
        DETAIL = coalesce((SELECT o.id::text FROM orders o WHERE o.ticket_id = p_ticket), '');
END
$$;
-- +goose StatementEnd

-- confirm_purchase (one-step purchase), now also refusing a seat under a
-- live hold (FO003) and counting the buyer's live holds against the limit.
-- Locks are taken in the order key, seat, buyer everywhere, so these
-- functions cannot deadlock each other.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION confirm_purchase(p_ticket bigint, p_order uuid, p_buyer text, p_key text, p_max int)
RETURNS TABLE (replayed boolean, order_id uuid, ticket_id bigint, buyer_id text, purchased_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
BEGIN
    IF p_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_buyer || '/' || p_key, 0));
        RETURN QUERY SELECT true, o.id, o.ticket_id, o.buyer_id, o.purchased_at
            FROM orders o WHERE o.buyer_id = p_buyer AND o.idempotency_key = p_key;
        IF FOUND THEN RETURN; END IF;
    END IF;

    -- The fence: only one transaction can flip a seat from unsold to sold,
    -- and not while another buyer's hold on it lives.
    UPDATE tickets t SET sold = true, hold_id = NULL, held_by = NULL, held_until = NULL,
            changed_xid = pg_current_xact_id()
        WHERE t.id = p_ticket AND NOT t.sold AND (t.held_until IS NULL OR t.held_until <= clock_timestamp());
    IF NOT FOUND THEN
        PERFORM refuse_seat(p_ticket);
    END IF;

    IF p_max > 0 THEN
        PERFORM check_buyer_limit(p_buyer, p_max);
    END IF;
    -- Counted under every limit (0 = unlimited), as in 00002.
    INSERT INTO buyers AS b (buyer_id, tickets) VALUES (p_buyer, 1)
        ON CONFLICT (buyer_id) DO UPDATE SET tickets = b.tickets + 1;

    UPDATE sold_counter SET sold = sold + 1 WHERE shard = p_ticket % 64;

    RETURN QUERY INSERT INTO orders AS o (id, ticket_id, buyer_id, idempotency_key)
        VALUES (p_order, p_ticket, p_buyer, p_key)
        RETURNING false, o.id, o.ticket_id, o.buyer_id, o.purchased_at;
END
$$;
-- +goose StatementEnd

-- hold_seat holds p_ticket for p_buyer until now + p_ttl_ms (the database's
-- clock decides expiry, so every pod agrees). A repeat of the same hold id
-- returns the hold (replayed).
-- +goose StatementBegin
CREATE FUNCTION hold_seat(p_ticket bigint, p_hold uuid, p_buyer text, p_ttl_ms bigint, p_max int)
RETURNS TABLE (replayed boolean, hold_id uuid, ticket_id bigint, buyer_id text, expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ttl   interval := p_ttl_ms * interval '1 millisecond';
    v_until timestamptz;
BEGIN
    RETURN QUERY SELECT true, h.id, h.ticket_id, h.buyer_id, h.expires_at FROM holds h WHERE h.id = p_hold;
    IF FOUND THEN RETURN; END IF;

    -- The fence: a seat unsold and not under a live hold. The hold starts
    -- when the row qualified (SET is computed after WHERE, after any wait
    -- for the row's lock), so it never starts before the previous one ended.
    UPDATE tickets t SET hold_id = p_hold, held_by = p_buyer, held_until = clock_timestamp() + v_ttl,
            changed_xid = pg_current_xact_id()
        WHERE t.id = p_ticket AND NOT t.sold AND (t.held_until IS NULL OR t.held_until <= clock_timestamp())
        RETURNING t.held_until INTO v_until;
    IF NOT FOUND THEN
        PERFORM refuse_seat(p_ticket);
    END IF;

    IF p_max > 0 THEN
        PERFORM check_buyer_limit(p_buyer, p_max);
    END IF;

    RETURN QUERY INSERT INTO holds AS h (id, ticket_id, buyer_id, expires_at, created_at)
        VALUES (p_hold, p_ticket, p_buyer, v_until, v_until - v_ttl)
        RETURNING false, h.id, h.ticket_id, h.buyer_id, h.expires_at;
END
$$;
-- +goose StatementEnd

-- confirm_hold turns a live hold into an order (p_order), or returns the
-- order it already became (replayed). The hold counted against the buyer
-- limit already, so no limit is checked: the order takes its place. The
-- order's purchased_at is the instant the hold was seen live, so an audit
-- can check that no order came from an expired hold.
-- +goose StatementBegin
CREATE FUNCTION confirm_hold(p_hold uuid, p_buyer text, p_order uuid, p_payment text)
RETURNS TABLE (replayed boolean, order_id uuid, ticket_id bigint, buyer_id text, purchased_at timestamptz,
               hold_id uuid, payment_ref text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_h   holds%ROWTYPE;
    v_now timestamptz;
BEGIN
    -- The hold's row serialises confirms, releases and retries of one hold.
    SELECT * INTO v_h FROM holds h WHERE h.id = p_hold FOR UPDATE;
    IF NOT FOUND OR v_h.buyer_id <> p_buyer THEN
        RAISE EXCEPTION 'no hold %', p_hold USING ERRCODE = 'FO004';
    END IF;
    IF v_h.state = 'confirmed' THEN
        RETURN QUERY SELECT true, o.id, o.ticket_id, o.buyer_id, o.purchased_at, o.hold_id, o.payment_ref
            FROM orders o WHERE o.id = v_h.order_id;
        RETURN;
    ELSIF v_h.state = 'released' THEN
        RAISE EXCEPTION 'hold % was released', p_hold USING ERRCODE = 'FO005', DETAIL = 'released';
    END IF;
    v_now := clock_timestamp();
    IF v_h.expires_at <= v_now THEN
        RAISE EXCEPTION 'hold % expired', p_hold USING ERRCODE = 'FO005', DETAIL = 'expired';
    END IF;

    -- Live, so the seat is still ours (nobody overwrites a live hold).
    UPDATE tickets t SET sold = true, hold_id = NULL, held_by = NULL, held_until = NULL,
            changed_xid = pg_current_xact_id()
        WHERE t.id = v_h.ticket_id AND t.hold_id = p_hold AND NOT t.sold;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold % lost its seat', p_hold USING ERRCODE = 'FO005', DETAIL = 'expired';
    END IF;
    INSERT INTO buyers AS b (buyer_id, tickets) VALUES (p_buyer, 1)
        ON CONFLICT (buyer_id) DO UPDATE SET tickets = b.tickets + 1;
    UPDATE sold_counter SET sold = sold + 1 WHERE shard = v_h.ticket_id % 64;
    UPDATE holds h SET state = 'confirmed', order_id = p_order, payment_ref = p_payment WHERE h.id = p_hold;
    RETURN QUERY INSERT INTO orders AS o (id, ticket_id, buyer_id, purchased_at, hold_id, payment_ref)
        VALUES (p_order, v_h.ticket_id, p_buyer, v_now, p_hold, p_payment)
        RETURNING false, o.id, o.ticket_id, o.buyer_id, o.purchased_at, o.hold_id, o.payment_ref;
END
$$;
-- +goose StatementEnd

-- release_hold gives a live hold's seat back at once. Idempotent: a
-- released, expired or confirmed hold is left as it is. released says
-- whether this call freed the seat.
-- +goose StatementBegin
CREATE FUNCTION release_hold(p_hold uuid)
RETURNS TABLE (released boolean, ticket_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_h holds%ROWTYPE;
BEGIN
    SELECT * INTO v_h FROM holds h WHERE h.id = p_hold FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no hold %', p_hold USING ERRCODE = 'FO004';
    END IF;
    IF v_h.state <> 'held' OR v_h.expires_at <= clock_timestamp() THEN
        RETURN QUERY SELECT false, v_h.ticket_id;
        RETURN;
    END IF;
    UPDATE holds h SET state = 'released' WHERE h.id = p_hold;
    UPDATE tickets t SET hold_id = NULL, held_by = NULL, held_until = NULL, changed_xid = pg_current_xact_id()
        WHERE t.id = v_h.ticket_id AND t.hold_id = p_hold AND NOT t.sold;
    RETURN QUERY SELECT true, v_h.ticket_id;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION release_hold(uuid);
DROP FUNCTION confirm_hold(uuid, text, uuid, text);
DROP FUNCTION hold_seat(bigint, uuid, text, bigint, int);
ALTER TABLE orders DROP COLUMN payment_ref, DROP COLUMN hold_id;
DROP TABLE holds;
ALTER TABLE tickets DROP COLUMN changed_xid, DROP COLUMN held_until, DROP COLUMN held_by, DROP COLUMN hold_id;
-- confirm_purchase as of 00002.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION confirm_purchase(p_ticket bigint, p_order uuid, p_buyer text, p_key text, p_max int)
RETURNS TABLE (replayed boolean, order_id uuid, ticket_id bigint, buyer_id text, purchased_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF p_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_buyer || '/' || p_key, 0));
        RETURN QUERY SELECT true, o.id, o.ticket_id, o.buyer_id, o.purchased_at
            FROM orders o WHERE o.buyer_id = p_buyer AND o.idempotency_key = p_key;
        IF FOUND THEN RETURN; END IF;
    END IF;
    UPDATE tickets SET sold = true WHERE id = p_ticket AND NOT sold;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ticket % is sold', p_ticket USING ERRCODE = 'FO001',
            DETAIL = coalesce((SELECT o.id::text FROM orders o WHERE o.ticket_id = p_ticket), '');
    END IF;
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
DROP FUNCTION check_buyer_limit(text, int);
DROP FUNCTION refuse_seat(bigint);
