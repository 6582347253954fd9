-- The outbox without an outbox row (docs/delivery.md, "The outbox"): an
-- event is the row of its own fact. An order.confirmed is its order's row
-- (or, once cancelled, its cancellation's), an order.cancelled its
-- cancellation's row, a sale.* event its webhook_sale_events row. Each
-- such row carries the xid8 of the transaction that wrote it, and the pods
-- fan the events out in (xid, source, key) order behind one cursor.
--
-- Why: the outbox of 00007 (a river_job row per order, written by a
-- statement trigger) cost PostgreSQL about 126 µs of CPU per order while
-- a webhook listened (a wide jsonb row, River's indexes, its GIN index on
-- args, then the fan-out's update of the row and a completed delivery row)
-- and 40–60 µs per confirming statement even with the switch off (the
-- trigger and its transition table). An xid8 column with a default and one
-- partial btree index cost a few µs, whether or not the sale has a webhook,
-- and the confirming functions are untouched (no copy of them to keep in
-- step: every version of them, and a pod of the previous version during a
-- rolling upgrade, writes orders that carry their xid).
--
-- Gap-free and exactly ordered without a hot row: a reader takes the
-- events whose xid is below pg_snapshot_xmin of its own statement's
-- snapshot. Every transaction below it has ended, so no event can appear
-- behind the cursor later (the seat feed's technique, orderstore's
-- seatfeed.go). The cost: a write transaction left open in the sale's
-- database holds delivery back until it ends.
--
-- The switch of 00010 keeps its meaning (the sale has a webhook), but
-- nothing reads it while writing any more: its OFF → ON edge resets the
-- cursor to that moment's snapshot (webhook_cursor.after), so an endpoint
-- gets exactly the events whose transaction had not committed when it
-- appeared.

-- +goose Up
-- The columns below take ACCESS EXCLUSIVE locks on tables that every
-- confirmation writes, held to this migration's commit (a fraction of a
-- second: measured 0.33 s with 200,000 orders). Behind a long transaction
-- the migration fails after 5 s and the pod retries at its restart,
-- instead of queueing every purchase behind it.
SET LOCAL lock_timeout = '5s';

-- NULL for the rows written before this migration: their events, if any,
-- went to river_job (converted below while still pending). The default is
-- set after the column exists, so adding it rewrites nothing.
ALTER TABLE orders ADD COLUMN event_xid xid8;
ALTER TABLE orders ALTER COLUMN event_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX orders_event_xid ON orders (event_xid, id) WHERE event_xid IS NOT NULL;

-- A cancelled order keeps its order.confirmed event's xid (confirmed_xid):
-- cancelled before the fan-out reached it, the event is still sent, from
-- here. cancel_xid is its order.cancelled event's.
ALTER TABLE order_cancellations ADD COLUMN confirmed_xid xid8, ADD COLUMN cancel_xid xid8;
ALTER TABLE order_cancellations ALTER COLUMN cancel_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX order_cancellations_confirmed_xid ON order_cancellations (confirmed_xid, order_id) WHERE confirmed_xid IS NOT NULL;
CREATE INDEX order_cancellations_cancel_xid ON order_cancellations (cancel_xid, order_id) WHERE cancel_xid IS NOT NULL;

-- A sale event's time and data are the pod's (the moment, the counts
-- then). A row without data was recorded by a pod of the previous version
-- during the rolling upgrade: that pod delivers it through river_job, and
-- the pods of this version convert what it left behind (delivery's
-- convertLegacyEvents); it is not an event of the cursor.
ALTER TABLE webhook_sale_events ADD COLUMN xid xid8, ADD COLUMN at timestamptz, ADD COLUMN data jsonb;
ALTER TABLE webhook_sale_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();

-- Every event, with the fields of the bodies of 00007 and 00009. key
-- orders the events of one transaction and source; src: 1 order.confirmed,
-- 2 order.cancelled, 3 the sale's own (whose webhook-id the pods complete
-- with the sale's name). The pods count the pending events through it;
-- the fan-out reads each source on its own index (delivery's outbox.go),
-- in the same order.
CREATE VIEW webhook_events AS
    SELECT o.event_xid AS xid, 1 AS src, o.id::text AS key, o.id::text AS id,
           'order.confirmed' AS type, o.purchased_at AS at,
           jsonb_strip_nulls(jsonb_build_object(
               'orderId', o.id, 'ticketId', o.ticket_id, 'buyerId', o.buyer_id,
               'purchasedAt', o.purchased_at, 'holdId', o.hold_id, 'paymentRef', o.payment_ref)) AS data
        FROM orders o WHERE o.event_xid IS NOT NULL
    UNION ALL
    SELECT c.confirmed_xid, 1, c.order_id::text, c.order_id::text,
           'order.confirmed', c.purchased_at,
           jsonb_strip_nulls(jsonb_build_object(
               'orderId', c.order_id, 'ticketId', c.ticket_id, 'buyerId', c.buyer_id,
               'purchasedAt', c.purchased_at, 'holdId', c.hold_id, 'paymentRef', c.payment_ref))
        FROM order_cancellations c WHERE c.confirmed_xid IS NOT NULL
    UNION ALL
    SELECT c.cancel_xid, 2, c.order_id::text, 'order.cancelled:' || c.order_id::text,
           'order.cancelled', c.cancelled_at,
           jsonb_strip_nulls(jsonb_build_object(
               'orderId', c.order_id, 'ticketId', c.ticket_id, 'buyerId', c.buyer_id,
               'purchasedAt', c.purchased_at, 'holdId', c.hold_id, 'paymentRef', c.payment_ref,
               'cancelledAt', c.cancelled_at, 'cancelledBy', c.cancelled_by, 'reason', c.reason))
        FROM order_cancellations c WHERE c.cancel_xid IS NOT NULL
    UNION ALL
    SELECT s.xid, 3, s.type, s.type, s.type, s.at, s.data
        FROM webhook_sale_events s WHERE s.xid IS NOT NULL AND s.data IS NOT NULL;

-- The fan-out's cursor: the events after (xid, src, key) and not visible
-- in `after` (the snapshot of the switch's last OFF → ON) are not claimed
-- yet. next_seq numbers the next event claimed (the body's sequence: in
-- cursor order, so monotonic).
CREATE TABLE webhook_cursor (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    xid      xid8    NOT NULL DEFAULT '0',
    src      int     NOT NULL DEFAULT 0,
    key      text    NOT NULL DEFAULT '',
    next_seq bigint  NOT NULL,
    after    pg_snapshot
);
INSERT INTO webhook_cursor (next_seq) VALUES (nextval('webhook_event_seq'));

-- Batches claimed and not recorded yet: the n events after (from_xid,
-- from_src, from_key) up to (to_xid, to_src, to_key), numbered from
-- first_seq, leased to one pod. Claims
-- let several batches be in flight at once, from one pod or several; a
-- claim whose lease ends unrecorded (its pod died) is taken over by another
-- pod, which reads the same events and numbers them the same way.
CREATE TABLE webhook_claims (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_xid     xid8        NOT NULL,
    from_src     int         NOT NULL,
    from_key     text        NOT NULL,
    to_xid       xid8        NOT NULL,
    to_src       int         NOT NULL,
    to_key       text        NOT NULL,
    after        pg_snapshot,
    first_seq    bigint      NOT NULL,
    n            int         NOT NULL,
    leased_by    text        NOT NULL,
    leased_until timestamptz NOT NULL
);

-- Deliveries the fan-out made itself (their first attempt got a 2xx),
-- counted per webhook: one upsert per batch instead of a completed
-- river_job row per delivery. Retries stay River jobs.
CREATE TABLE webhook_delivered (
    webhook   text   PRIMARY KEY,
    delivered bigint NOT NULL
);

DROP TRIGGER orders_outbox ON orders;
DROP FUNCTION orders_outbox();

-- The switch's OFF → ON starts the events at that transaction's snapshot:
-- an event whose transaction had committed by then happened before the
-- webhook. A trigger, so that it holds whichever version of the pods turns
-- the switch on (a pod of the previous version during the rolling upgrade
-- knows nothing of the cursor).
-- +goose StatementBegin
CREATE FUNCTION outbox_switch_on() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The lock the pods claim batches under (delivery's claimLock): no
    -- claim reads the cursor meanwhile, and the UPDATE below, a statement
    -- of its own, takes its snapshot after the last claim committed.
    PERFORM pg_advisory_xact_lock(1718384760, hashtext(current_schema() || '/webhook_claims'));
    UPDATE webhook_cursor SET after = pg_current_snapshot(), xid = pg_snapshot_xmin(pg_current_snapshot()),
        src = 0, key = '';
    RETURN NULL;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER outbox_switch_on AFTER UPDATE ON outbox_switch
    FOR EACH ROW WHEN (NOT OLD.enabled AND NEW.enabled) EXECUTE FUNCTION outbox_switch_on();

-- The events of 00007 still waiting for the fan-out become pending events
-- of the cursor, in this transaction (its xid is above the cursor's
-- start). SKIP LOCKED: an event that a pod of the previous version is
-- fanning out right now stays its own (it marks it completed), so none is
-- sent by both. The completed rows are left to River's cleaner.
CREATE TEMP TABLE legacy_events (args jsonb) ON COMMIT DROP;
WITH d AS (
    DELETE FROM river_job WHERE id IN (
        SELECT id FROM river_job WHERE kind = 'flux_order_event' AND state = 'available' FOR UPDATE SKIP LOCKED)
    RETURNING args)
INSERT INTO legacy_events SELECT args FROM d;
UPDATE orders o SET event_xid = pg_current_xact_id()
    FROM legacy_events j
    WHERE j.args->>'type' = 'order.confirmed' AND o.id::text = j.args->>'id';
UPDATE order_cancellations c SET confirmed_xid = pg_current_xact_id()
    FROM legacy_events j
    WHERE j.args->>'type' = 'order.confirmed' AND c.order_id::text = j.args->>'id';
UPDATE order_cancellations c SET cancel_xid = pg_current_xact_id()
    FROM legacy_events j
    WHERE j.args->>'type' = 'order.cancelled' AND j.args->>'id' = 'order.cancelled:' || c.order_id::text;
UPDATE webhook_sale_events s SET xid = pg_current_xact_id(), at = (j.args->>'at')::timestamptz, data = j.args->'data'
    FROM legacy_events j
    WHERE j.args->>'type' = s.type;

-- cancel_order as of 00010, its events now the cancellation row itself.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION cancel_order(p_order uuid, p_by text, p_reason text)
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
        IF v_o.idempotency_key IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(hashtextextended(v_o.buyer_id || '/' || v_o.idempotency_key, 0));
        END IF;
        IF v_o.hold_id IS NOT NULL THEN
            PERFORM 1 FROM holds h WHERE h.id = v_o.hold_id FOR UPDATE;
        END IF;
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

    UPDATE tickets t SET sold = false, hold_id = NULL, held_by = NULL, held_until = NULL,
            changed_xid = pg_current_xact_id()
        WHERE t.id = v_o.ticket_id;
    UPDATE buyers b SET tickets = b.tickets - 1 WHERE b.buyer_id = v_o.buyer_id AND b.tickets > 0;
    UPDATE sold_counter s SET sold = s.sold - 1 WHERE s.shard = v_o.ticket_id % 64;

    DELETE FROM orders o WHERE o.id = p_order;
    INSERT INTO order_cancellations AS c (order_id, ticket_id, buyer_id, idempotency_key, purchased_at, hold_id,
            payment_ref, cancelled_by, reason, confirmed_xid)
        VALUES (v_o.id, v_o.ticket_id, v_o.buyer_id, v_o.idempotency_key, v_o.purchased_at, v_o.hold_id,
            v_o.payment_ref, p_by, p_reason, v_o.event_xid)
        RETURNING * INTO v_c;

    RETURN QUERY SELECT true, v_c.order_id, v_c.ticket_id, v_c.buyer_id, v_c.purchased_at, v_c.hold_id,
        v_c.payment_ref, v_c.cancelled_at, v_c.cancelled_by, v_c.reason;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- The events still pending (not claimed, or claimed and not recorded: from
-- the earliest claim on, some twice) go back to river_job, numbered after the
-- cursor's last number, then the trigger and cancel_order of 00010 return;
-- the SHARE lock keeps confirmations out meanwhile, so none commits between
-- the copy and the trigger. The sale's own pending events are not carried
-- back (their webhook-id needs the sale's name, which the database does not
-- hold).
SET LOCAL lock_timeout = '5s';
LOCK TABLE orders, order_cancellations, webhook_sale_events IN SHARE MODE;
SELECT setval('webhook_event_seq', greatest((SELECT next_seq FROM webhook_cursor), (SELECT last_value FROM webhook_event_seq)));
INSERT INTO river_job (kind, queue, args, max_attempts, state, scheduled_at, priority)
    SELECT 'flux_order_event', 'webhook_events',
           jsonb_build_object('id', e.id, 'type', e.type, 'seq', nextval('webhook_event_seq'), 'at', e.at, 'data', e.data),
           25, 'available', clock_timestamp(), 1
    FROM webhook_events e, webhook_cursor w
    WHERE (SELECT enabled FROM outbox_switch) AND e.src <> 3
      AND (ROW(e.xid, e.src, e.key COLLATE "C") > ROW(w.xid, w.src, w.key)
           OR EXISTS (SELECT 1 FROM webhook_claims k WHERE ROW(e.xid, e.src, e.key COLLATE "C") > ROW(k.from_xid, k.from_src, k.from_key)))
      AND (w.after IS NULL OR NOT pg_visible_in_snapshot(e.xid, w.after))
    ORDER BY e.xid, e.src, e.key COLLATE "C";
DROP TRIGGER outbox_switch_on ON outbox_switch;
DROP FUNCTION outbox_switch_on();
DROP TABLE webhook_delivered;
DROP TABLE webhook_claims;
DROP TABLE webhook_cursor;
DROP VIEW webhook_events;

-- The trigger of 00010.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION orders_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT outbox_on() THEN
        RETURN NULL;
    END IF;
    INSERT INTO river_job (kind, queue, args, max_attempts, state, scheduled_at, priority)
        SELECT 'flux_order_event', 'webhook_events',
               jsonb_build_object(
                   'id', o.id::text,
                   'type', 'order.confirmed',
                   'seq', nextval('webhook_event_seq'),
                   'at', o.purchased_at,
                   'data', jsonb_strip_nulls(jsonb_build_object(
                       'orderId', o.id, 'ticketId', o.ticket_id, 'buyerId', o.buyer_id,
                       'purchasedAt', o.purchased_at, 'holdId', o.hold_id, 'paymentRef', o.payment_ref))),
               25, 'available', clock_timestamp(), 1
        FROM new_orders o ORDER BY o.purchased_at, o.id;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER orders_outbox AFTER INSERT ON orders
    REFERENCING NEW TABLE AS new_orders
    FOR EACH STATEMENT EXECUTE FUNCTION orders_outbox();

-- cancel_order as of 00010.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION cancel_order(p_order uuid, p_by text, p_reason text)
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
        IF v_o.idempotency_key IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(hashtextextended(v_o.buyer_id || '/' || v_o.idempotency_key, 0));
        END IF;
        IF v_o.hold_id IS NOT NULL THEN
            PERFORM 1 FROM holds h WHERE h.id = v_o.hold_id FOR UPDATE;
        END IF;
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

    UPDATE tickets t SET sold = false, hold_id = NULL, held_by = NULL, held_until = NULL,
            changed_xid = pg_current_xact_id()
        WHERE t.id = v_o.ticket_id;
    UPDATE buyers b SET tickets = b.tickets - 1 WHERE b.buyer_id = v_o.buyer_id AND b.tickets > 0;
    UPDATE sold_counter s SET sold = s.sold - 1 WHERE s.shard = v_o.ticket_id % 64;

    DELETE FROM orders o WHERE o.id = p_order;
    INSERT INTO order_cancellations AS c (order_id, ticket_id, buyer_id, idempotency_key, purchased_at, hold_id,
            payment_ref, cancelled_by, reason)
        VALUES (v_o.id, v_o.ticket_id, v_o.buyer_id, v_o.idempotency_key, v_o.purchased_at, v_o.hold_id,
            v_o.payment_ref, p_by, p_reason)
        RETURNING * INTO v_c;

    IF outbox_on() THEN
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
    END IF;

    RETURN QUERY SELECT true, v_c.order_id, v_c.ticket_id, v_c.buyer_id, v_c.purchased_at, v_c.hold_id,
        v_c.payment_ref, v_c.cancelled_at, v_c.cancelled_by, v_c.reason;
END
$$;
-- +goose StatementEnd

ALTER TABLE webhook_sale_events DROP COLUMN data, DROP COLUMN at, DROP COLUMN xid;
DROP INDEX order_cancellations_cancel_xid;
DROP INDEX order_cancellations_confirmed_xid;
ALTER TABLE order_cancellations DROP COLUMN cancel_xid, DROP COLUMN confirmed_xid;
DROP INDEX orders_event_xid;
ALTER TABLE orders DROP COLUMN event_xid;
