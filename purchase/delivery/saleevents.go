package delivery

import (
	"context"
	"encoding/json"
	"time"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// SaleFacts are what the sale's own events are decided from: the live
// window and the counts.
type SaleFacts struct {
	StartsAt, EndsAt time.Time // zero: unset
	Tickets, Sold    int64
}

// SaleData is the data of a sale.* event.
type SaleData struct {
	Sale     string     `json:"sale"`
	Tickets  int64      `json:"tickets"`
	Sold     int64      `json:"sold"`
	StartsAt *time.Time `json:"startsAt,omitempty"`
	EndsAt   *time.Time `json:"endsAt,omitempty"`
}

// saleEvents checks the sale's moments every interval and records each
// event once (the first pod to see it wins; the others find its row).
// sale.on_sale: the window is open (from startsAt, or from the first
// check when there is none) and has not ended; sale.sold_out: every seat
// sold; sale.ended: endsAt passed. A moment that passed while no pod ran
// is recorded when one runs again (its timestamp is the moment's).
func (d *Deliverer) saleEvents(ctx context.Context, interval time.Duration) {
	done := map[string]bool{}
	rows, err := d.pool.Query(ctx, `SELECT type FROM webhook_sale_events`)
	if err == nil {
		for rows.Next() {
			var typ string
			if rows.Scan(&typ) == nil {
				done[typ] = true
			}
		}
		rows.Close()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if f, err := d.cfg.Facts(ctx); err == nil {
			now := time.Now()
			ended := !f.EndsAt.IsZero() && !now.Before(f.EndsAt)
			for _, ev := range []struct {
				typ salesv1alpha1.WebhookEvent
				due bool
				at  time.Time
			}{
				{salesv1alpha1.EventSaleOnSale, !now.Before(f.StartsAt) && !ended, f.StartsAt},
				{salesv1alpha1.EventSaleSoldOut, f.Tickets > 0 && f.Sold >= f.Tickets, now},
				{salesv1alpha1.EventSaleEnded, ended, f.EndsAt},
			} {
				if !ev.due || done[string(ev.typ)] {
					continue
				}
				if ev.at.IsZero() {
					ev.at = now
				}
				if err := d.recordSaleEvent(ctx, string(ev.typ), ev.at, f); err != nil {
					d.log.Warn("record a sale event", "type", ev.typ, "err", err)
					continue
				}
				done[string(ev.typ)] = true
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// recordSaleEvent writes the event's row, unless another pod did.
func (d *Deliverer) recordSaleEvent(ctx context.Context, typ string, at time.Time, f SaleFacts) error {
	data := SaleData{Sale: d.cfg.Sale, Tickets: f.Tickets, Sold: f.Sold}
	if !f.StartsAt.IsZero() {
		s := f.StartsAt.UTC()
		data.StartsAt = &s
	}
	if !f.EndsAt.IsZero() {
		e := f.EndsAt.UTC()
		data.EndsAt = &e
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	// The row is the event (the outbox cursor's view, webhook_events):
	// delivered if a webhook listens, from the moment it appeared.
	_, err = d.pool.Exec(ctx, `INSERT INTO webhook_sale_events (type, at, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		typ, at.UTC(), raw)
	return err
}
