package delivery

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// The outbox's switch (migrations *_outbox_switch.sql and
// *_outbox_cursor.sql, docs/delivery.md): the sale's events are delivered
// while it has a webhook, from the moment it got one. Each pod sets it
// from its webhooks file, every FollowInterval and at once when the file
// changes:
//
//   - a pod that lists a webhook sets it on and stamps webhook_seen_at:
//     ON is immediate, and the stamp is what holds it on;
//   - a pod that lists none sets it off only when no pod has stamped it
//     for OutboxOffAfter (one conditional UPDATE, so it cannot undo an ON
//     that committed meanwhile: the row lock orders them and PostgreSQL
//     re-checks the condition on the row it locked).
//
// So pods that disagree while the kubelet propagates the file end with
// the switch ON, and it goes off OutboxOffAfter after the last pod that
// saw a webhook stopped seeing one. A sale that never had one (no stamp
// at all) goes off at its first pod's start.

// applySwitch sets the switch as this pod's file says and answers
// whether the switch is on now.
func (d *Deliverer) applySwitch(ctx context.Context) (on bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if len(d.settings.Load().hooks) == 0 {
		_, err = d.pool.Exec(ctx, `UPDATE outbox_switch SET enabled = false, changed_at = now()
			WHERE enabled AND (webhook_seen_at IS NULL OR webhook_seen_at < now() - make_interval(secs => $1))`, d.cfg.OutboxOffAfter.Seconds())
		if err != nil {
			return false, err
		}
		err = d.pool.QueryRow(ctx, `SELECT outbox_on()`).Scan(&on)
		return on, err
	}
	err = pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		var was bool
		if err := tx.QueryRow(ctx, `SELECT enabled FROM outbox_switch FOR UPDATE`).Scan(&was); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE outbox_switch SET enabled = true, webhook_seen_at = now(),
				changed_at = CASE WHEN enabled THEN changed_at ELSE now() END`); err != nil {
			return err
		}
		if was {
			return nil
		}
		// OFF → ON: the events start now (the switch's trigger resets the
		// cursor to this transaction's snapshot). Nothing that writes an
		// event reads the switch, so no lock is needed.
		d.log.Info("a webhook: the sale's events are delivered from now on")
		return nil
	})
	return err == nil, err
}

// setSwitch applies the switch and remembers its state (OutboxOn); an
// error leaves both as they were (the next tick tries again).
func (d *Deliverer) setSwitch(ctx context.Context) {
	on, err := d.applySwitch(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("set the outbox switch", "err", err)
		}
		return
	}
	if d.switchOn.Swap(on) != on && !on {
		d.log.Info("no webhook: the sale records no events")
	}
}

// OutboxOn is the switch as this pod last read or set it.
func (d *Deliverer) OutboxOn() bool { return d.switchOn.Load() }
