-- Group commit (issue 18): each purchase pod confirms many purchases, holds
-- or hold confirmations in one statement, hence one round trip and one
-- durable commit. The one-order functions of 00003 stay, unchanged, for a pod
-- of the previous version during a rolling upgrade; they take their locks in
-- the same order as these.
--
-- Every refusal comes back as a row, never as a RAISE: one raise would undo
-- the whole batch. No savepoint, no EXCEPTION block: a member is refused by
-- deciding, from rows this transaction has locked, that it is not written.
--
-- Locks are taken in one global order, in phases, each phase sorted:
--   1. keys: advisory locks on the hashes of the members' idempotency keys
--      (purchases) or hold ids (holds), sorted by hash;
--   2. holds: the hold rows being confirmed, sorted by id;
--   3. seats: the tickets rows, sorted by id (SELECT ... ORDER BY id FOR
--      UPDATE locks in that order: the sort runs below the row locking);
--   4. buyers: the buyers rows, sorted by buyer_id (an INSERT ... SELECT ...
--      ORDER BY ... ON CONFLICT DO UPDATE locks each row in turn);
--   5. counters: one sold_counter row per batch.
-- Batches from any number of pods, and the one-order functions (which take
-- one lock of each phase in the same order), therefore cannot deadlock.
--
-- Two members of one batch never share a seat, an idempotency key or a hold:
-- the pod's batcher defers such a member to the next batch, where it sees the
-- first one's outcome exactly as if it had come after it. The functions
-- refuse such a batch as a whole (a bug, not a buyer's doing).
--
-- Outcomes (column outcome), DETAIL-like column detail for the caller:
--   ok        written: the member's order or hold is in the row
--   replayed  the key (or hold id) had its order (hold) already: in the row
--   sold      seat sold; detail: the owning order id, or ''
--   held      seat under another live hold; detail: '<hold id> <expiry unix ms>'
--   limit     buyer limit; detail: the buyer's orders (without holds)
--   nohold    no such hold, or another buyer's (confirm_holds)
--   expired   the hold expired, or lost its seat (confirm_holds)
--   released  the hold was released (confirm_holds)

-- +goose Up

-- batch_fence_seats is phase 3 for the members whose state is NULL: it locks
-- their seats in id order and says of each: free (unsold, under no live
-- hold), sold (detail: the owning order) or held (detail: the live hold).
-- A seat that does not exist is sold with detail ''.
-- +goose StatementBegin
CREATE FUNCTION batch_fence_seats(p_tickets bigint[], INOUT p_state text[], INOUT p_detail text[])
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT m.i, t.id, t.sold, t.hold_id, t.held_until
             FROM tickets t JOIN unnest(p_tickets) WITH ORDINALITY m(tid, i) ON t.id = m.tid
             WHERE p_state[m.i] IS NULL
             ORDER BY t.id FOR UPDATE OF t LOOP
        IF r.sold THEN
            p_state[r.i] := 'sold';
            p_detail[r.i] := coalesce((SELECT o.id::text FROM orders o WHERE o.ticket_id = r.id), '');
        ELSIF r.held_until > clock_timestamp() THEN
            p_state[r.i] := 'held';
            p_detail[r.i] := r.hold_id::text || ' ' || floor(extract(epoch FROM r.held_until) * 1000)::bigint;
        ELSE
            p_state[r.i] := 'free';
        END IF;
    END LOOP;
    FOR r IN SELECT m.i FROM generate_series(1, cardinality(p_tickets)) m(i) WHERE p_state[m.i] IS NULL LOOP
        p_state[r.i] := 'sold';
        p_detail[r.i] := '';
    END LOOP;
END
$$;
-- +goose StatementEnd

-- batch_buyer_limit is phase 4 for the members whose state is free: under a
-- limit (p_max > 0) it locks their buyers' rows in buyer_id order (a no-op
-- update), then counts each buyer's orders and live holds in a new statement,
-- whose snapshot sees every hold committed while the locks were awaited. A
-- buyer's members are taken in batch order, as if one after the other: ok
-- while they fit, then limit (detail: the buyer's orders at that point, which
-- counts the members before it when they are orders, p_orders).
-- +goose StatementBegin
CREATE FUNCTION batch_buyer_limit(p_buyers text[], p_max int, p_orders boolean, INOUT p_state text[], INOUT p_detail text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_bb text[];
    v_bt int[];
    r    record;
BEGIN
    IF p_max <= 0 THEN
        FOR r IN SELECT m.i FROM generate_series(1, cardinality(p_buyers)) m(i) WHERE p_state[m.i] = 'free' LOOP
            p_state[r.i] := 'ok';
        END LOOP;
        RETURN;
    END IF;
    WITH locked AS (
        INSERT INTO buyers AS bu (buyer_id, tickets)
            SELECT DISTINCT m.b, 0 FROM unnest(p_buyers) WITH ORDINALITY m(b, i)
            WHERE p_state[m.i] = 'free' ORDER BY 1
        ON CONFLICT (buyer_id) DO UPDATE SET tickets = bu.tickets
        RETURNING bu.buyer_id, bu.tickets)
    SELECT array_agg(l.buyer_id), array_agg(l.tickets) INTO v_bb, v_bt FROM locked l;
    FOR r IN
        WITH live AS (
            SELECT h.buyer_id, count(*) AS n FROM holds h
            WHERE h.buyer_id = ANY (v_bb) AND h.state = 'held' AND h.expires_at > clock_timestamp()
            GROUP BY h.buyer_id)
        SELECT m.i, l.t AS orders, p_max - l.t - coalesce(lv.n, 0) AS room,
               row_number() OVER (PARTITION BY m.b ORDER BY m.i) AS rank
        FROM unnest(p_buyers) WITH ORDINALITY m(b, i)
        JOIN unnest(v_bb, v_bt) l(b, t) ON l.b = m.b
        LEFT JOIN live lv ON lv.buyer_id = m.b
        WHERE p_state[m.i] = 'free' LOOP
        IF r.rank <= r.room THEN
            p_state[r.i] := 'ok';
        ELSE
            p_state[r.i] := 'limit';
            p_detail[r.i] := (r.orders + CASE WHEN p_orders THEN greatest(r.room, 0) ELSE 0 END)::text;
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- batch_sell_seats ends phase 4 and does phase 5 for the members whose state
-- is ok: it counts their orders in buyers (buyer_id order), marks their
-- seats (locked in phase 3) sold, and adds them to one sold_counter row,
-- picked by the connection so that the pool's connections rarely wait on
-- each other.
-- +goose StatementBegin
CREATE FUNCTION batch_sell_seats(p_seats bigint[], p_buyers text[], p_state text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_won int;
BEGIN
    INSERT INTO buyers AS bu (buyer_id, tickets)
        SELECT m.b, count(*) FROM unnest(p_buyers) WITH ORDINALITY m(b, i)
        WHERE p_state[m.i] = 'ok' GROUP BY m.b ORDER BY m.b
    ON CONFLICT (buyer_id) DO UPDATE SET tickets = bu.tickets + excluded.tickets;
    UPDATE tickets t SET sold = true, hold_id = NULL, held_by = NULL, held_until = NULL,
            changed_xid = pg_current_xact_id()
        FROM unnest(p_seats) WITH ORDINALITY m(tid, i)
        WHERE t.id = m.tid AND p_state[m.i] = 'ok';
    GET DIAGNOSTICS v_won = ROW_COUNT;
    IF v_won > 0 THEN
        UPDATE sold_counter SET sold = sold + v_won WHERE shard = pg_backend_pid() % 64;
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION confirm_purchases(p_tickets bigint[], p_orders uuid[], p_buyers text[], p_keys text[], p_max int)
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

-- hold_seats holds each member's seat for its buyer until now + p_ttl_ms (the
-- database's clock decides expiry, so every pod agrees). A hold id that
-- exists already is replayed (a retry of a keyed hold, perhaps on another
-- seat: the caller gives its seat back).
-- +goose StatementBegin
CREATE FUNCTION hold_seats(p_tickets bigint[], p_holds uuid[], p_buyers text[], p_ttl_ms bigint, p_max int)
RETURNS TABLE (idx int, outcome text, hold_id uuid, ticket_id bigint, buyer_id text, expires_at timestamptz, detail text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n        int := coalesce(cardinality(p_tickets), 0);
    v_ttl    interval := p_ttl_ms * interval '1 millisecond';
    v_now    timestamptz;
    v_state  text[] := array_fill(NULL::text, ARRAY[n]);
    v_detail text[] := array_fill(NULL::text, ARRAY[n]);
    r        record;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_holds) <> n OR cardinality(p_buyers) <> n THEN
        RAISE EXCEPTION 'hold_seats: arrays of different lengths';
    END IF;
    IF (SELECT count(DISTINCT t) FROM unnest(p_tickets) t) <> n
        OR (SELECT count(DISTINCT h) FROM unnest(p_holds) h) <> n THEN
        RAISE EXCEPTION 'hold_seats: a seat or a hold twice in one batch';
    END IF;

    -- 1. Keys: retries of one keyed hold (one derived hold id) meet here.
    FOR r IN SELECT DISTINCT hashtextextended('hold/' || h::text, 0) AS h FROM unnest(p_holds) h ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(r.h);
    END LOOP;
    FOR r IN SELECT m.i FROM unnest(p_holds) WITH ORDINALITY m(hid, i) JOIN holds h ON h.id = m.hid LOOP
        v_state[r.i] := 'replayed';
    END LOOP;

    -- 3. Seats. 4. Buyers: orders and live holds count against the limit.
    SELECT * INTO v_state, v_detail FROM batch_fence_seats(p_tickets, v_state, v_detail);
    SELECT * INTO v_state, v_detail FROM batch_buyer_limit(p_buyers, p_max, false, v_state, v_detail);

    -- The holds start now, after every lock they waited for, so none starts
    -- before the previous hold of its seat ended. A hold id that a pod of
    -- the previous version (hold_seat, without the key's lock) committed
    -- meanwhile is skipped by ON CONFLICT (after waiting for its commit)
    -- and replayed: its seat is left as it is.
    v_now := clock_timestamp();
    FOR r IN
        WITH ins AS (
            INSERT INTO holds AS h (id, ticket_id, buyer_id, expires_at, created_at)
                SELECT m.hid, m.tid, m.b, v_now + v_ttl, v_now
                FROM unnest(p_tickets, p_holds, p_buyers) WITH ORDINALITY m(tid, hid, b, i)
                WHERE v_state[m.i] = 'ok' ORDER BY m.hid
            ON CONFLICT (id) DO NOTHING
            RETURNING h.id, h.ticket_id, h.buyer_id),
        upd AS (
            UPDATE tickets t SET hold_id = ins.id, held_by = ins.buyer_id, held_until = v_now + v_ttl,
                    changed_xid = pg_current_xact_id()
                FROM ins WHERE t.id = ins.ticket_id)
        SELECT m.i FROM ins JOIN unnest(p_holds) WITH ORDINALITY m(hid, i) ON m.hid = ins.id LOOP
        v_state[r.i] := 'written';
    END LOOP;

    RETURN QUERY
        SELECT m.i::int, CASE v_state[m.i] WHEN 'written' THEN 'ok' ELSE 'replayed' END,
               h.id, h.ticket_id, h.buyer_id, h.expires_at, NULL::text
        FROM unnest(p_holds) WITH ORDINALITY m(hid, i) JOIN holds h ON h.id = m.hid
        WHERE v_state[m.i] IN ('written', 'ok', 'replayed');
    RETURN QUERY
        SELECT m.i::int, v_state[m.i], NULL::uuid, m.tid, NULL::text, NULL::timestamptz, v_detail[m.i]
        FROM unnest(p_tickets) WITH ORDINALITY m(tid, i)
        WHERE v_state[m.i] NOT IN ('written', 'ok', 'replayed');
END
$$;
-- +goose StatementEnd

-- confirm_holds turns each member's live hold into an order, or answers the
-- order it already became (replayed). A hold counted against the buyer
-- limit already, so no limit is checked. An order's purchased_at is the
-- instant its hold was seen live (an audit checks no order came from an
-- expired hold).
-- +goose StatementBegin
CREATE FUNCTION confirm_holds(p_holds uuid[], p_buyers text[], p_orders uuid[], p_payments text[])
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
    FOR r IN SELECT m.i, m.b, h.buyer_id, h.state, h.expires_at, h.ticket_id
             FROM holds h JOIN unnest(p_holds, p_buyers) WITH ORDINALITY m(hid, b, i) ON h.id = m.hid
             ORDER BY h.id FOR UPDATE OF h LOOP
        IF r.buyer_id <> r.b THEN
            v_state[r.i] := 'nohold';
        ELSIF r.state = 'confirmed' THEN
            v_state[r.i] := 'replayed';
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
        SELECT m.i::int, v_state[m.i], NULL::uuid, NULL::bigint, NULL::text, NULL::timestamptz, m.hid, NULL::text
        FROM unnest(p_holds) WITH ORDINALITY m(hid, i)
        WHERE v_state[m.i] NOT IN ('ok', 'replayed');
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION confirm_holds(uuid[], text[], uuid[], text[]);
DROP FUNCTION hold_seats(bigint[], uuid[], text[], bigint, int);
DROP FUNCTION confirm_purchases(bigint[], uuid[], text[], text[], int);
DROP FUNCTION batch_sell_seats(bigint[], text[], text[]);
DROP FUNCTION batch_buyer_limit(text[], int, boolean, text[], text[]);
DROP FUNCTION batch_fence_seats(bigint[], text[], text[]);
