-- Order cancellation (issue 19, "Cancellation: orders also come back"): a
-- payment that fails, is refunded or charged back after the confirmation
-- gives the seat back to the sale.
--
-- A cancelled order leaves orders for order_cancellations, in the one
-- transaction of cancel_order that also frees the seat, gives the buyer's
-- count back, takes it off the sold counter and writes the order.cancelled
-- event. Moving it out of orders (rather than flagging it in place) keeps
-- every fence as it is: orders_ticket_id_key still says "one live order
-- per seat", and every count and audit of orders still counts live orders.
--
-- The price is that an idempotency key's order may now be in either table:
-- every function that replays by key (or by hold) also looks in
-- order_cancellations and answers "cancelled" (FO006, DETAIL the order id)
-- instead of buying the seat again under the same key. They are redefined
-- below with that one addition.
--
-- Locks follow the global order of 00005 (key, hold, seat, buyer,
-- counters): cancel_order takes the order's key lock (or its hold's row)
-- before the seat, so a retry of the key either ran before the cancel (and
-- replayed the order) or runs after it (and finds the cancellation).
--
-- Error codes (SQLSTATE, DETAIL for the caller), after 00003's:
--   FO006 the key's (or hold's) order was cancelled  DETAIL: the order id
--   FO007 no such order (cancel_order)

-- +goose Up
CREATE TABLE order_cancellations (
    -- id is the pods' cursor (they poll for cancellations they missed).
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id        uuid        NOT NULL,
    ticket_id       bigint      NOT NULL REFERENCES tickets (id),
    buyer_id        text        NOT NULL,
    idempotency_key text,
    purchased_at    timestamptz NOT NULL,
    hold_id         uuid,
    payment_ref     text,
    cancelled_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    cancelled_by    text        NOT NULL,
    reason          text        NOT NULL,
    CONSTRAINT order_cancellations_order_id_key UNIQUE (order_id),
    CONSTRAINT order_cancellations_key UNIQUE (buyer_id, idempotency_key)
);
CREATE INDEX order_cancellations_cancelled_at ON order_cancellations (cancelled_at);
CREATE INDEX order_cancellations_hold_id ON order_cancellations (hold_id) WHERE hold_id IS NOT NULL;

-- cancel_order cancels one order: first is true for the call that did,
-- false for a repeat (which changes nothing and answers the first
-- cancellation, its author and reason included).
-- +goose StatementBegin
CREATE FUNCTION cancel_order(p_order uuid, p_by text, p_reason text)
RETURNS TABLE (first boolean, order_id uuid, ticket_id bigint, buyer_id text, purchased_at timestamptz,
               hold_id uuid, payment_ref text, cancelled_at timestamptz, cancelled_by text, reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_o orders%ROWTYPE;
    v_c order_cancellations%ROWTYPE;
BEGIN
    SELECT * INTO v_o FROM orders o WHERE o.id = p_order;
    IF FOUND THEN
        -- 1. The key (a purchase's retries meet under it) or 2. the hold
        -- (a hold's confirmations meet on its row).
        IF v_o.idempotency_key IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(hashtextextended(v_o.buyer_id || '/' || v_o.idempotency_key, 0));
        END IF;
        IF v_o.hold_id IS NOT NULL THEN
            PERFORM 1 FROM holds h WHERE h.id = v_o.hold_id FOR UPDATE;
        END IF;
        -- A concurrent cancel of the same order may have won meanwhile:
        -- then the row is gone and the cancellation is answered below.
        SELECT * INTO v_o FROM orders o WHERE o.id = p_order FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        SELECT * INTO v_c FROM order_cancellations c WHERE c.order_id = p_order;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no order %', p_order USING ERRCODE = 'FO007';
        END IF;
        RETURN QUERY SELECT false, v_c.order_id, v_c.ticket_id, v_c.buyer_id, v_c.purchased_at, v_c.hold_id,
            v_c.payment_ref, v_c.cancelled_at, v_c.cancelled_by, v_c.reason;
        RETURN;
    END IF;

    -- 3. The seat is free again, and the seat feed (changed_xid) says so.
    UPDATE tickets t SET sold = false, hold_id = NULL, held_by = NULL, held_until = NULL,
            changed_xid = pg_current_xact_id()
        WHERE t.id = v_o.ticket_id;
    -- 4. The buyer's count (the buyer limit) and 5. the sold counter.
    UPDATE buyers b SET tickets = b.tickets - 1 WHERE b.buyer_id = v_o.buyer_id AND b.tickets > 0;
    UPDATE sold_counter s SET sold = s.sold - 1 WHERE s.shard = v_o.ticket_id % 64;

    DELETE FROM orders o WHERE o.id = p_order;
    INSERT INTO order_cancellations AS c (order_id, ticket_id, buyer_id, idempotency_key, purchased_at, hold_id,
            payment_ref, cancelled_by, reason)
        VALUES (v_o.id, v_o.ticket_id, v_o.buyer_id, v_o.idempotency_key, v_o.purchased_at, v_o.hold_id,
            v_o.payment_ref, p_by, p_reason)
        RETURNING * INTO v_c;

    -- The order.cancelled event, in the same commit (the outbox of 00007).
    -- Its webhook-id is "order.cancelled:<order id>", never the order's own
    -- id (order.confirmed's), so a receiver deduplicating by webhook-id
    -- keeps both.
    INSERT INTO river_job (kind, queue, args, max_attempts, state, scheduled_at, priority)
        VALUES ('flux_order_event', 'webhook_events',
               jsonb_build_object(
                   'id', 'order.cancelled:' || v_c.order_id::text,
                   'type', 'order.cancelled',
                   'seq', nextval('webhook_event_seq'),
                   'at', v_c.cancelled_at,
                   'data', jsonb_strip_nulls(jsonb_build_object(
                       'orderId', v_c.order_id, 'ticketId', v_c.ticket_id, 'buyerId', v_c.buyer_id,
                       'purchasedAt', v_c.purchased_at, 'holdId', v_c.hold_id, 'paymentRef', v_c.payment_ref,
                       'cancelledAt', v_c.cancelled_at, 'cancelledBy', v_c.cancelled_by, 'reason', v_c.reason))),
               25, 'available', clock_timestamp(), 1);

    RETURN QUERY SELECT true, v_c.order_id, v_c.ticket_id, v_c.buyer_id, v_c.purchased_at, v_c.hold_id,
        v_c.payment_ref, v_c.cancelled_at, v_c.cancelled_by, v_c.reason;
END
$$;
-- +goose StatementEnd

-- confirm_purchase (one order) as of 00003, and a key whose order was
-- cancelled raises FO006 instead of buying again.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION confirm_purchase(p_ticket bigint, p_order uuid, p_buyer text, p_key text, p_max int)
RETURNS TABLE (replayed boolean, order_id uuid, ticket_id bigint, buyer_id text, purchased_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_cancelled uuid;
BEGIN
    IF p_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_buyer || '/' || p_key, 0));
        RETURN QUERY SELECT true, o.id, o.ticket_id, o.buyer_id, o.purchased_at
            FROM orders o WHERE o.buyer_id = p_buyer AND o.idempotency_key = p_key;
        IF FOUND THEN RETURN; END IF;
        SELECT c.order_id INTO v_cancelled FROM order_cancellations c
            WHERE c.buyer_id = p_buyer AND c.idempotency_key = p_key;
        IF FOUND THEN
            RAISE EXCEPTION 'order % of this key was cancelled', v_cancelled USING ERRCODE = 'FO006',
                DETAIL = v_cancelled::text;
        END IF;
    END IF;

    UPDATE tickets t SET sold = true, hold_id = NULL, held_by = NULL, held_until = NULL,
            changed_xid = pg_current_xact_id()
        WHERE t.id = p_ticket AND NOT t.sold AND (t.held_until IS NULL OR t.held_until <= clock_timestamp());
    IF NOT FOUND THEN
        PERFORM refuse_seat(p_ticket);
    END IF;

    IF p_max > 0 THEN
        PERFORM check_buyer_limit(p_buyer, p_max);
    END IF;
    INSERT INTO buyers AS b (buyer_id, tickets) VALUES (p_buyer, 1)
        ON CONFLICT (buyer_id) DO UPDATE SET tickets = b.tickets + 1;

    UPDATE sold_counter SET sold = sold + 1 WHERE shard = p_ticket % 64;

    RETURN QUERY INSERT INTO orders AS o (id, ticket_id, buyer_id, idempotency_key)
        VALUES (p_order, p_ticket, p_buyer, p_key)
        RETURNING false, o.id, o.ticket_id, o.buyer_id, o.purchased_at;
END
$$;
-- +goose StatementEnd

-- confirm_hold (one hold) as of 00003; a confirmed hold whose order was
-- cancelled raises FO006 (its order is no longer in orders).
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION confirm_hold(p_hold uuid, p_buyer text, p_order uuid, p_payment text)
RETURNS TABLE (replayed boolean, order_id uuid, ticket_id bigint, buyer_id text, purchased_at timestamptz,
               hold_id uuid, payment_ref text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_h   holds%ROWTYPE;
    v_now timestamptz;
BEGIN
    SELECT * INTO v_h FROM holds h WHERE h.id = p_hold FOR UPDATE;
    IF NOT FOUND OR v_h.buyer_id <> p_buyer THEN
        RAISE EXCEPTION 'no hold %', p_hold USING ERRCODE = 'FO004';
    END IF;
    IF v_h.state = 'confirmed' THEN
        RETURN QUERY SELECT true, o.id, o.ticket_id, o.buyer_id, o.purchased_at, o.hold_id, o.payment_ref
            FROM orders o WHERE o.id = v_h.order_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'order % of hold % was cancelled', v_h.order_id, p_hold USING ERRCODE = 'FO006',
                DETAIL = v_h.order_id::text;
        END IF;
        RETURN;
    ELSIF v_h.state = 'released' THEN
        RAISE EXCEPTION 'hold % was released', p_hold USING ERRCODE = 'FO005', DETAIL = 'released';
    END IF;
    v_now := clock_timestamp();
    IF v_h.expires_at <= v_now THEN
        RAISE EXCEPTION 'hold % expired', p_hold USING ERRCODE = 'FO005', DETAIL = 'expired';
    END IF;

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

-- confirm_purchases (group commit) as of 00005; a key whose order was
-- cancelled is answered outcome 'cancelled', detail the order id.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION confirm_purchases(p_tickets bigint[], p_orders uuid[], p_buyers text[], p_keys text[], p_max int)
RETURNS TABLE (idx int, outcome text, order_id uuid, ticket_id bigint, buyer_id text, purchased_at timestamptz, detail text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n        int := coalesce(cardinality(p_tickets), 0);
    v_state  text[] := array_fill(NULL::text, ARRAY[n]);
    v_detail text[] := array_fill(NULL::text, ARRAY[n]);
    r        record;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_orders) <> n OR cardinality(p_buyers) <> n OR cardinality(p_keys) <> n THEN
        RAISE EXCEPTION 'confirm_purchases: arrays of different lengths';
    END IF;
    IF (SELECT count(DISTINCT t) FROM unnest(p_tickets) t) <> n
        OR (SELECT count(DISTINCT (b, k)) FROM unnest(p_buyers, p_keys) m(b, k) WHERE k IS NOT NULL)
           <> (SELECT count(*) FROM unnest(p_keys) k WHERE k IS NOT NULL) THEN
        RAISE EXCEPTION 'confirm_purchases: a seat or an idempotency key twice in one batch';
    END IF;

    -- 1. Keys. Concurrent retries of one key (even on other seats, any-seat
    -- purchases) meet here; each statement after the wait takes a new
    -- snapshot (READ COMMITTED), so it sees the first attempt's order.
    FOR r IN SELECT DISTINCT hashtextextended(m.b || '/' || m.k, 0) AS h
             FROM unnest(p_buyers, p_keys) m(b, k) WHERE m.k IS NOT NULL ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(r.h);
    END LOOP;
    FOR r IN SELECT m.i FROM unnest(p_buyers, p_keys) WITH ORDINALITY m(b, k, i)
             JOIN orders o ON o.buyer_id = m.b AND o.idempotency_key = m.k LOOP
        v_state[r.i] := 'replayed';
    END LOOP;
    -- A key whose order was cancelled buys nothing again (00009).
    FOR r IN SELECT m.i, c.order_id FROM unnest(p_buyers, p_keys) WITH ORDINALITY m(b, k, i)
             JOIN order_cancellations c ON c.buyer_id = m.b AND c.idempotency_key = m.k
             WHERE v_state[m.i] IS NULL LOOP
        v_state[r.i] := 'cancelled';
        v_detail[r.i] := r.order_id::text;
    END LOOP;

    -- 3. Seats: the fence. 4. Buyers: every order counts in buyers (as in
    -- 00002), under every limit.
    SELECT * INTO v_state, v_detail FROM batch_fence_seats(p_tickets, v_state, v_detail);
    SELECT * INTO v_state, v_detail FROM batch_buyer_limit(p_buyers, p_max, true, v_state, v_detail);
    PERFORM batch_sell_seats(p_tickets, p_buyers, v_state);

    RETURN QUERY
        WITH ins AS (
            INSERT INTO orders AS o (id, ticket_id, buyer_id, idempotency_key)
                SELECT m.oid, m.tid, m.b, m.k FROM unnest(p_orders, p_tickets, p_buyers, p_keys) WITH ORDINALITY m(oid, tid, b, k, i)
                WHERE v_state[m.i] = 'ok' ORDER BY m.tid
            RETURNING o.id, o.ticket_id, o.buyer_id, o.purchased_at)
        SELECT m.i::int, 'ok'::text, ins.id, ins.ticket_id, ins.buyer_id, ins.purchased_at, NULL::text
        FROM ins JOIN unnest(p_orders) WITH ORDINALITY m(oid, i) ON m.oid = ins.id;
    RETURN QUERY
        SELECT m.i::int, 'replayed'::text, o.id, o.ticket_id, o.buyer_id, o.purchased_at, NULL::text
        FROM unnest(p_buyers, p_keys) WITH ORDINALITY m(b, k, i)
        JOIN orders o ON o.buyer_id = m.b AND o.idempotency_key = m.k
        WHERE v_state[m.i] = 'replayed';
    RETURN QUERY
        SELECT m.i::int, v_state[m.i], NULL::uuid, m.tid, NULL::text, NULL::timestamptz, v_detail[m.i]
        FROM unnest(p_tickets) WITH ORDINALITY m(tid, i)
        WHERE v_state[m.i] NOT IN ('ok', 'replayed');
END
$$;
-- +goose StatementEnd

-- confirm_holds (group commit) as of 00005; a confirmed hold whose order
-- was cancelled is answered outcome 'cancelled', order_id the order.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION confirm_holds(p_holds uuid[], p_buyers text[], p_orders uuid[], p_payments text[])
RETURNS TABLE (idx int, outcome text, order_id uuid, ticket_id bigint, buyer_id text, purchased_at timestamptz,
               hold_id uuid, payment_ref text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n       int := coalesce(cardinality(p_holds), 0);
    v_state text[] := array_fill(NULL::text, ARRAY[n]);
    v_at    timestamptz[] := array_fill(NULL::timestamptz, ARRAY[n]);
    v_seat  bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    r       record;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_buyers) <> n OR cardinality(p_orders) <> n OR cardinality(p_payments) <> n THEN
        RAISE EXCEPTION 'confirm_holds: arrays of different lengths';
    END IF;
    IF (SELECT count(DISTINCT h) FROM unnest(p_holds) h) <> n THEN
        RAISE EXCEPTION 'confirm_holds: a hold twice in one batch';
    END IF;

    -- 2. Holds: each hold's row serialises its confirms, releases and retries.
    FOR r IN SELECT m.i, m.b, h.buyer_id, h.state, h.expires_at, h.ticket_id, h.order_id
             FROM holds h JOIN unnest(p_holds, p_buyers) WITH ORDINALITY m(hid, b, i) ON h.id = m.hid
             ORDER BY h.id FOR UPDATE OF h LOOP
        IF r.buyer_id <> r.b THEN
            v_state[r.i] := 'nohold';
        ELSIF r.state = 'confirmed' THEN
            -- Its order may have been cancelled since (00009).
            v_state[r.i] := CASE WHEN EXISTS (SELECT 1 FROM orders o WHERE o.id = r.order_id)
                                 THEN 'replayed' ELSE 'cancelled' END;
        ELSIF r.state = 'released' THEN
            v_state[r.i] := 'released';
        ELSE
            v_at[r.i] := clock_timestamp();
            IF r.expires_at <= v_at[r.i] THEN
                v_state[r.i] := 'expired';
            ELSE
                v_state[r.i] := 'live';
                v_seat[r.i] := r.ticket_id;
            END IF;
        END IF;
    END LOOP;
    FOR r IN SELECT m.i FROM generate_series(1, n) m(i) WHERE v_state[m.i] IS NULL LOOP
        v_state[r.i] := 'nohold';
    END LOOP;

    -- 3. Seats: live, so the seat is still the hold's (nobody overwrites a
    -- live hold); checked anyway.
    FOR r IN SELECT m.i, t.hold_id, t.sold
             FROM tickets t JOIN unnest(v_seat, p_holds) WITH ORDINALITY m(tid, hid, i) ON t.id = m.tid
             WHERE v_state[m.i] = 'live'
             ORDER BY t.id FOR UPDATE OF t LOOP
        IF r.sold OR r.hold_id IS DISTINCT FROM p_holds[r.i] THEN
            v_state[r.i] := 'expired';
        ELSE
            v_state[r.i] := 'ok';
        END IF;
    END LOOP;

    -- 4. Buyers, counted under every limit. 5. Counters.
    PERFORM batch_sell_seats(v_seat, p_buyers, v_state);
    UPDATE holds h SET state = 'confirmed', order_id = m.oid, payment_ref = m.pay
        FROM unnest(p_holds, p_orders, p_payments) WITH ORDINALITY m(hid, oid, pay, i)
        WHERE h.id = m.hid AND v_state[m.i] = 'ok';

    RETURN QUERY
        WITH ins AS (
            INSERT INTO orders AS o (id, ticket_id, buyer_id, purchased_at, hold_id, payment_ref)
                SELECT m.oid, v_seat[m.i], m.b, v_at[m.i], m.hid, m.pay
                FROM unnest(p_holds, p_buyers, p_orders, p_payments) WITH ORDINALITY m(hid, b, oid, pay, i)
                WHERE v_state[m.i] = 'ok' ORDER BY v_seat[m.i]
            RETURNING o.id, o.ticket_id, o.buyer_id, o.purchased_at, o.hold_id, o.payment_ref)
        SELECT m.i::int, 'ok'::text, ins.id, ins.ticket_id, ins.buyer_id, ins.purchased_at, ins.hold_id, ins.payment_ref
        FROM ins JOIN unnest(p_orders) WITH ORDINALITY m(oid, i) ON m.oid = ins.id;
    RETURN QUERY
        SELECT m.i::int, 'replayed'::text, o.id, o.ticket_id, o.buyer_id, o.purchased_at, o.hold_id, o.payment_ref
        FROM unnest(p_holds) WITH ORDINALITY m(hid, i)
        JOIN holds h ON h.id = m.hid JOIN orders o ON o.id = h.order_id
        WHERE v_state[m.i] = 'replayed';
    RETURN QUERY
        SELECT m.i::int, v_state[m.i], h.order_id, NULL::bigint, NULL::text, NULL::timestamptz, m.hid, NULL::text
        FROM unnest(p_holds) WITH ORDINALITY m(hid, i)
        LEFT JOIN holds h ON h.id = m.hid AND v_state[m.i] = 'cancelled'
        WHERE v_state[m.i] NOT IN ('ok', 'replayed');
END
$$;
-- +goose StatementEnd

-- +goose Down
-- The functions of 00003 and 00005 are restored by re-running those
-- migrations' bodies; the cancelled orders stay in order_cancellations.
DROP FUNCTION cancel_order(uuid, text, text);
