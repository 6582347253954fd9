-- The transactional outbox of issue 19: every order that commits carries
-- its order.confirmed event in the same commit, and an order that does not
-- commit (a fence refusal, the buyer limit, a rollback, a crash before the
-- commit) carries none: the event is a row of the order's own transaction.
--
-- The outbox is River's job table (riverqueue/river, created by River's
-- own migrator, which the pod runs before these migrations: see
-- Store.Migrate). One job per event (kind flux_order_event, queue
-- webhook_events, which no River client works): the pods take them in
-- batches and turn each into one delivery job per webhook that wants it
-- (queue webhooks, worked by River; docs/delivery.md).
--
-- Written by a statement-level trigger on orders rather than inside
-- confirm_purchases and confirm_holds: it runs inside whichever statement
-- inserts orders (the group-commit functions of 00005, and the one-order
-- functions of 00003 that a pod of the previous version still calls during
-- a rolling upgrade), once per statement for all of its rows. So a batch
-- of confirmations writes its events with one more INSERT in the same
-- statement: no round trip, no second transaction, and no copy of the
-- confirming functions to keep in step.
--
-- The event's sequence number comes from a sequence object (CACHE 1: a
-- confirmation later in time gets a larger number), never from a counter
-- row that every confirmation would update. Two confirmations that run at
-- once may commit in the other order, and a rolled-back one leaves a gap:
-- monotonic, gaps allowed (docs/delivery.md, Ordering).
--
-- No NOTIFY: River would be woken at once, but NOTIFY serialises every
-- committing transaction on one global lock. The workers poll instead
-- (every 100 ms), well inside the 1 s lag target.

-- +goose Up
CREATE SEQUENCE webhook_event_seq AS bigint CACHE 1;

-- +goose StatementBegin
CREATE FUNCTION orders_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
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

-- Redeliveries of dead events already done, by spec.delivery.redeliverDead
-- token: each token moves the dead events back once, whichever pod sees it
-- first.
CREATE TABLE webhook_redeliveries (
    token   text        PRIMARY KEY,
    done_at timestamptz NOT NULL DEFAULT now(),
    moved   bigint      NOT NULL
);

-- The sale's own events (sale.on_sale, sale.sold_out, sale.ended), each
-- written once, by whichever pod sees its moment first, in the transaction
-- that inserts its outbox row.
CREATE TABLE webhook_sale_events (
    type    text        PRIMARY KEY,
    made_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE webhook_sale_events;
DROP TABLE webhook_redeliveries;
DROP TRIGGER orders_outbox ON orders;
DROP FUNCTION orders_outbox();
DROP SEQUENCE webhook_event_seq;
