package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/flux-order/flux-order/purchase/orderstore"
)

// The outbox (migration *_outbox_cursor.sql, docs/delivery.md): an event
// is the row of its fact (an order, a cancellation, a sale moment), which
// carries the xid8 of the transaction that wrote it; the view
// webhook_events lists them all. The pods fan them out in (xid, src, key)
// order behind one cursor, reading only below pg_snapshot_xmin of the
// reading statement's own snapshot: every transaction below it has ended,
// so no event can appear behind the cursor later, whatever order
// transactions commit in.

// fanOutBatch is how many events one fan-out batch takes.
const fanOutBatch = 500

// cursor is the fan-out's position: the events after (xid, src, key) that
// are not visible in after (the switch's last OFF → ON) are pending.
type cursor struct {
	xid     string // xid8 as text
	src     int
	key     string
	nextSeq int64
	after   *string // pg_snapshot as text; nil: no snapshot to skip
}

// fanOut turns the events of the outbox into one delivery per webhook that
// wants each, in batches of up to fanOutBatch: it makes the first attempt
// of each delivery to a webhook this pod has not seen failing (Workers at
// once) and hands the failed ones, and every delivery to a failing
// webhook, to River; then it moves the cursor past the batch. One pod fans
// out at a time (the cursor's lease); the others poll. A pod that dies
// mid-batch leaves its lease to expire and another pod fans the batch out
// again (a receiver may get an event twice, with the same webhook-id and
// sequence). It polls every PollInterval, at once again after a full
// batch, and only while this pod's file lists a webhook and the switch is
// on (a pod that lists one keeps it on).
//
// Why the first attempt is not a River job: a job per delivery costs
// PostgreSQL an insert, the fetch's update and the completion's update
// (each re-indexing River's GIN index on args, body included), and the pod
// River's fetch, decoding and completion; and River's fetch cadence capped
// delivery below the sale's rate (lag p99 4 s). Here it is the HTTP request
// and a share of one counter update per batch.
func (d *Deliverer) fanOut(ctx context.Context) {
	for {
		if len(d.settings.Load().hooks) == 0 || !d.switchOn.Load() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d.cfg.PollInterval):
			}
			continue
		}
		if ctx.Err() != nil {
			return // no new batch once the pod stops (fanOutOnce outlives ctx)
		}
		n, err := d.fanOutOnce(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("fan the events out", "err", err)
		}
		if n == fanOutBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.cfg.PollInterval):
		}
	}
}

// leaseFor is how long a fan-out batch may hold the cursor: its attempts
// start within one AttemptTimeout (the rest are deferred to River, as are
// an endpoint's once it fails) and each ends within another, then the
// batch is recorded (recordTimeout).
func (d *Deliverer) leaseFor() time.Duration { return 3*d.cfg.AttemptTimeout + 2*recordTimeout }

// recordTimeout bounds the statement that records a batch, and the one
// that gives its lease back, each on a context of its own: a batch whose
// attempts ran long still records what they got.
const recordTimeout = 10 * time.Second

// errLeaseLost: another pod took the cursor over (this batch outlived its
// lease); that pod fans the batch out again.
var errLeaseLost = errors.New("the fan-out's lease expired: another pod fans this batch out again")

func (d *Deliverer) fanOutOnce(parent context.Context) (n int, err error) {
	// A batch runs to its end when the pod stops (bounded): stopped
	// halfway, its deliveries would be made again by another pod.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), d.leaseFor())
	defer cancel()
	// Read-only while there is nothing to do or another pod holds the
	// lease: polling writes nothing.
	var c cursor
	var free bool
	err = d.pool.QueryRow(ctx, `SELECT xid::text, src, key, next_seq, after::text,
			leased_until IS NULL OR leased_until < clock_timestamp() OR leased_by = $1
		FROM webhook_cursor`, d.client.ID()).Scan(&c.xid, &c.src, &c.key, &c.nextSeq, &c.after, &free)
	if err != nil || !free {
		return 0, err
	}
	events, last, err := d.pendingEvents(ctx, c, fanOutBatch)
	if err != nil || len(events) == 0 {
		return 0, err
	}
	// Take the lease only if the cursor is still where it was read (else
	// another pod fanned this batch out meanwhile).
	tag, err := d.pool.Exec(ctx, `UPDATE webhook_cursor SET leased_by = $5, leased_until = clock_timestamp() + make_interval(secs => $6)
		WHERE xid = $1::xid8 AND src = $2 AND key = $3 AND next_seq = $4 AND after::text IS NOT DISTINCT FROM $7
		  AND (leased_until IS NULL OR leased_until < clock_timestamp() OR leased_by = $5)`,
		c.xid, c.src, c.key, c.nextSeq, d.client.ID(), d.leaseFor().Seconds(), c.after)
	if err != nil || tag.RowsAffected() == 0 {
		return 0, err
	}

	hooks := d.settings.Load().hooks
	var inline []*attempt
	var params []river.InsertManyParams
	for i, e := range events {
		e.Seq = c.nextSeq + int64(i)
		body, err := json.Marshal(Body{Type: e.Type, Timestamp: e.At.UTC(), Sequence: e.Seq, Data: e.Data})
		if err != nil {
			return 0, d.releaseLease(ctx, err)
		}
		for name, h := range hooks {
			if !h.wants(e.Type) {
				continue
			}
			a := DeliveryArgs{Webhook: name, ID: e.ID, Type: e.Type, At: e.At, Body: string(body)}
			if d.inlineFor(name, h) {
				inline = append(inline, &attempt{hook: h, args: a})
			} else {
				params = append(params, d.deliveryJob(a))
			}
		}
	}
	// A slow endpoint (2xx, but late) must not run the batch past its
	// lease: attempts not started within one AttemptTimeout go to River.
	delivered, failed, deferred := d.attemptInline(ctx, inline, time.Now().Add(d.cfg.AttemptTimeout))
	for _, a := range deferred {
		params = append(params, d.deliveryJob(a.args))
	}
	ctx, cancelRecord := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancelRecord()
	err = pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE webhook_cursor SET xid = $2::xid8, src = $3, key = $4, next_seq = $5,
				leased_by = NULL, leased_until = NULL
			WHERE leased_by = $1`, d.client.ID(), last.xid, last.src, last.key, c.nextSeq+int64(len(events)))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errLeaseLost
		}
		if len(params) > 0 {
			if _, err := d.client.InsertManyTx(ctx, tx, params); err != nil {
				return err
			}
		}
		if err := d.countDelivered(ctx, tx, delivered); err != nil {
			return err
		}
		return d.insertFailed(ctx, tx, failed)
	})
	if err != nil {
		return 0, d.releaseLease(ctx, err)
	}
	return len(events), nil
}

// releaseLease gives the cursor back after a batch that did not commit,
// so that another pod (or this one) fans it out again at once instead of
// after the lease; it answers err.
func (d *Deliverer) releaseLease(ctx context.Context, err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if _, rerr := d.pool.Exec(ctx, `UPDATE webhook_cursor SET leased_by = NULL, leased_until = NULL WHERE leased_by = $1`, d.client.ID()); rerr != nil {
		d.log.Warn("release the fan-out's lease", "err", rerr)
	}
	return err
}

// pendingEvents reads up to limit events after c, in order, and the
// position of the last one. Each source is read on its own (xid, key)
// index, at most limit rows and only those rendered, then the sources are
// merged: the view webhook_events, sorted on its text key, would build and
// sort every pending event for each batch (measured: about 5 µs an event,
// which after an outage of the fan-out is the whole backlog per batch).
func (d *Deliverer) pendingEvents(ctx context.Context, c cursor, limit int) ([]EventArgs, cursor, error) {
	args := []any{c.xid, c.after, limit}
	if c.src >= 1 && c.src <= srcSale {
		args = append(args, c.key) // $4: only a source at the cursor compares keys
	}
	rows, err := d.pool.Query(ctx, pendingSQL(c.src), args...)
	if err != nil {
		return nil, c, err
	}
	defer rows.Close()
	var events []EventArgs
	last := c
	for rows.Next() {
		var e EventArgs
		var o orderstore.Cancellation
		var holdID *uuid.UUID
		var paymentRef, cancelledBy, reason *string
		var cancelledAt *time.Time
		if err := rows.Scan(&last.xid, &last.src, &last.key, &e.Type, &e.At, &o.OrderID, &o.TicketID, &o.BuyerID, &o.PurchasedAt,
			&holdID, &paymentRef, &cancelledAt, &cancelledBy, &reason, &e.Data); err != nil {
			return nil, c, err
		}
		// The order's fields as the purchase API answers them (times in
		// UTC), built here rather than decoded from a jsonb: rendering
		// is on the fan-out's path of every event.
		if holdID != nil {
			o.HoldID = *holdID
		}
		if paymentRef != nil {
			o.PaymentRef = *paymentRef
		}
		o.PurchasedAt = o.PurchasedAt.UTC()
		var data any
		switch last.src {
		case srcConfirmed:
			e.ID = o.OrderID.String()
			data = orderstore.Order{ID: o.OrderID, TicketID: o.TicketID, BuyerID: o.BuyerID, PurchasedAt: o.PurchasedAt, HoldID: o.HoldID, PaymentRef: o.PaymentRef}
		case srcCancelled:
			e.ID = "order.cancelled:" + o.OrderID.String()
			o.CancelledAt, o.CancelledBy, o.Reason = cancelledAt.UTC(), *cancelledBy, *reason
			data = o
		default:
			e.ID = e.Type + ":" + d.cfg.Sale
		}
		if data != nil {
			raw, err := json.Marshal(data)
			if err != nil {
				return nil, c, err
			}
			e.Data = raw
		}
		events = append(events, e)
	}
	return events, last, rows.Err()
}

// webhook_events.src of each kind of event.
const (
	srcConfirmed = 1
	srcCancelled = 2
	srcSale      = 3
)

// pendingSQL reads the events after the cursor ($1 its xid, $4 its key
// when cursorSrc is a source; $2 the switch's snapshot; $3 the limit) that
// have settled: below the statement snapshot's xmin.
func pendingSQL(cursorSrc int) string {
	after := func(src int, xid, key, keyType string) string {
		switch {
		case cursorSrc < src:
			return xid + ` >= $1::xid8`
		case cursorSrc == src:
			return `(` + xid + `, ` + key + `) > ($1::xid8, $4::` + keyType + `)`
		default:
			return xid + ` > $1::xid8`
		}
	}
	settled := func(xid string) string {
		return xid + ` < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
			AND ($2::pg_snapshot IS NULL OR NOT pg_visible_in_snapshot(` + xid + `, $2::pg_snapshot))`
	}
	const orderCols = `ticket_id, buyer_id, purchased_at, hold_id, payment_ref`
	// The outer ORDER BY names u's columns: x::text is an output column
	// too, and an unqualified x would sort on its text.
	return `SELECT u.x::text AS xid_text, u.src, u.k, u.type, u.at, u.order_id, u.ticket_id, u.buyer_id, u.purchased_at,
			u.hold_id, u.payment_ref, u.cancelled_at, u.cancelled_by, u.reason, u.data
		FROM (
		(SELECT o.event_xid AS x, 1 AS src, o.id::text AS k, 'order.confirmed' AS type, o.purchased_at AS at, o.id AS order_id, ` + orderCols + `,
				NULL::timestamptz AS cancelled_at, NULL::text AS cancelled_by, NULL::text AS reason, NULL::jsonb AS data
			FROM orders o WHERE ` + after(1, "o.event_xid", "o.id", "uuid") + ` AND ` + settled("o.event_xid") + `
			ORDER BY o.event_xid, o.id LIMIT $3)
		UNION ALL
		(SELECT c.confirmed_xid, 1, c.order_id::text, 'order.confirmed', c.purchased_at, c.order_id, ` + orderCols + `, NULL, NULL, NULL, NULL
			FROM order_cancellations c
			WHERE ` + after(1, "c.confirmed_xid", "c.order_id", "uuid") + ` AND ` + settled("c.confirmed_xid") + `
			ORDER BY c.confirmed_xid, c.order_id LIMIT $3)
		UNION ALL
		(SELECT c.cancel_xid, 2, c.order_id::text, 'order.cancelled', c.cancelled_at, c.order_id, ` + orderCols + `,
				c.cancelled_at, c.cancelled_by, c.reason, NULL
			FROM order_cancellations c
			WHERE ` + after(2, "c.cancel_xid", "c.order_id", "uuid") + ` AND ` + settled("c.cancel_xid") + `
			ORDER BY c.cancel_xid, c.order_id LIMIT $3)
		UNION ALL
		(SELECT s.xid, 3, s.type, s.type, coalesce(s.at, s.made_at), '00000000-0000-0000-0000-000000000000'::uuid, 0, '', coalesce(s.at, s.made_at),
				NULL, NULL, NULL, NULL, NULL, coalesce(s.data, '{}'::jsonb)
			FROM webhook_sale_events s
			WHERE ` + after(3, "s.xid", `s.type COLLATE "C"`, "text") + ` AND ` + settled("s.xid") + `
			ORDER BY s.xid, s.type COLLATE "C" LIMIT $3)
	) u ORDER BY u.x, u.src, u.k COLLATE "C" LIMIT $3`
}

// countDelivered adds the deliveries the fan-out made itself to each
// webhook's count (status.delivery's delivered, with River's completed
// retries): one row per webhook and batch, not one per delivery.
func (d *Deliverer) countDelivered(ctx context.Context, tx pgx.Tx, as []*attempt) error {
	if len(as) == 0 {
		return nil
	}
	by := map[string]int64{}
	for _, a := range as {
		by[a.args.Webhook]++
	}
	names := make([]string, 0, len(by))
	counts := make([]int64, 0, len(by))
	for name, n := range by {
		names, counts = append(names, name), append(counts, n)
	}
	_, err := tx.Exec(ctx, `INSERT INTO webhook_delivered AS w (webhook, delivered)
		SELECT * FROM unnest($1::text[], $2::bigint[])
		ON CONFLICT (webhook) DO UPDATE SET delivered = w.delivered + excluded.delivered`, names, counts)
	return err
}

// pendingByType counts the events not fanned out yet, by type, with the
// oldest one's time.
func (d *Deliverer) pendingByType(ctx context.Context) (map[string]pendingCount, error) {
	var c cursor
	if err := d.pool.QueryRow(ctx, `SELECT xid::text, src, key, after::text FROM webhook_cursor`).Scan(&c.xid, &c.src, &c.key, &c.after); err != nil {
		return nil, err
	}
	// Settled or not: an event of a transaction that committed is pending
	// even while an older one still runs.
	rows, err := d.pool.Query(ctx, `SELECT type, count(*), min(at) FROM webhook_events
		WHERE xid >= $1::xid8 AND (xid > $1::xid8 OR src > $2 OR (src = $2 AND key COLLATE "C" > $3))
		  AND ($4::pg_snapshot IS NULL OR NOT pg_visible_in_snapshot(xid, $4::pg_snapshot))
		GROUP BY type`, c.xid, c.src, c.key, c.after)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]pendingCount{}
	for rows.Next() {
		var typ string
		var p pendingCount
		if err := rows.Scan(&typ, &p.n, &p.oldest); err != nil {
			return nil, err
		}
		out[typ] = p
	}
	return out, rows.Err()
}

type pendingCount struct {
	n      int64
	oldest time.Time
}

// convertLegacyEvents makes the sale events that a pod of the version
// before the cursor recorded during a rolling upgrade (a webhook_sale_events
// row without data, and its event as a river_job row, which that pod fans
// out itself) events of the cursor, once no such pod is left to fan them
// out: a row still available after 30 s (those pods poll every 100 ms).
// SKIP LOCKED leaves the ones a pod is fanning out right now to it.
func (d *Deliverer) convertLegacyEvents(ctx context.Context) {
	_, err := d.pool.Exec(ctx, `WITH j AS (
			DELETE FROM river_job WHERE id IN (
				SELECT id FROM river_job WHERE kind = $1 AND state = 'available' AND created_at < now() - interval '30 seconds'
				FOR UPDATE SKIP LOCKED)
			RETURNING args)
		UPDATE webhook_sale_events s SET xid = pg_current_xact_id(), at = (j.args->>'at')::timestamptz, data = j.args->'data'
			FROM j WHERE j.args->>'type' = s.type AND s.data IS NULL`, KindEvent)
	if err != nil && ctx.Err() == nil {
		d.log.Warn("convert the previous version's event rows", "err", err)
	}
}
