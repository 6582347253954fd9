-- The outbox's switch (docs/delivery.md, "Events exist while the sale has
-- a webhook"): a sale with no webhook writes no event rows. The outbox of
-- 00007 costs PostgreSQL about 70 µs per order (a river_job row, its
-- indexes and a sequence number), and the pods' fan-out of those rows as
-- much again in the pod, all for nobody when the sale has no webhook,
-- which is the common case.
--
-- The rule: an event exists iff its order (or cancellation, or sale
-- moment) committed while the switch was on, and the switch is on while
-- the sale has a webhook (as Stripe: an endpoint gets the events that
-- happen after it exists).
--
-- One row. The pods set it from their webhooks file (delivery's
-- outboxSwitch): a pod that lists a webhook sets it on and stamps
-- webhook_seen_at, at once and then every few seconds; a pod that lists
-- none sets it off only when no pod has stamped webhook_seen_at for
-- 30 s (one conditional UPDATE: it cannot race an ON, the row lock
-- orders them and the condition is re-checked on the row it locked).
-- Pods that disagree while the file propagates therefore end ON.
--
-- It starts on (webhook_seen_at NULL): a sale that existed before this
-- migration, and pods of the previous version, write events exactly as
-- before until a pod of this version that lists no webhook turns it off.
--
-- outbox_on() is read once per statement (the trigger is per statement),
-- never per order; cancel_order reads it once per cancellation.

-- +goose Up
CREATE TABLE outbox_switch (
    one             boolean     PRIMARY KEY DEFAULT true CHECK (one),
    enabled         boolean     NOT NULL,
    webhook_seen_at timestamptz,
    changed_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO outbox_switch (enabled) VALUES (true);

-- A missing row (nobody deletes it) reads as on: the safe side.
-- +goose StatementBegin
CREATE FUNCTION outbox_on() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT enabled FROM outbox_switch), true)
$$;
-- +goose StatementEnd

-- The trigger of 00007, returning at once while the switch is off.
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

-- cancel_order as of 00009, its order.cancelled event written only while
-- the switch is on.
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

-- +goose Down
-- The functions keep calling outbox_on(), which then always says on: the
-- behaviour of 00007 and 00009.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION outbox_on() RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT true $$;
-- +goose StatementEnd
DROP TABLE outbox_switch;
