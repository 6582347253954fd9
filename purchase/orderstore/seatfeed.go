package orderstore

import (
	"context"
	"fmt"
	"time"
)

// The queries of the sale page's seat-change feed (package purchase/seatfeed),
// on the columns of migration 00003: a seat is held iff NOT sold AND
// held_until > now, and every statement that changes a seat's sold or held
// state sets changed_xid = pg_current_xact_id().
//
// Gap-free cursor: each query returns pg_snapshot_xmin of its own snapshot.
// Every transaction that was not visible to that snapshot (still running,
// or not yet begun) has an xid at or above it, so the next query's
// `changed_xid >= cursor` sees its rows whatever order transactions commit
// in. Rows already seen come back until the oldest running transaction
// ends; the feed applies states, not differences, so that is harmless.

// SeatState is one seat's state at the query's snapshot and clock.
type SeatState struct {
	ID   int64
	Sold bool
	Held bool // not sold, and under a live hold
}

// SeatSnapshot is every sold or held seat, and where changes start.
type SeatSnapshot struct {
	Sold, Held []int64
	Cursor     string    // xid8, opaque: pass it to SeatChanges
	Clock      time.Time // the database's clock
}

// SeatChangeSet is the seats changed since a cursor, and the next cursor.
type SeatChangeSet struct {
	Seats  []SeatState
	Cursor string
	Clock  time.Time
}

// SeatStates reads the sold and held seats in one statement (one snapshot).
func (s *Store) SeatStates(ctx context.Context) (_ SeatSnapshot, err error) {
	defer s.errs.Deferred("seat_states", &err)
	rows, err := s.pool.Query(ctx, `
		SELECT c.xmin::text, c.now, t.id, t.sold
		FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin, clock_timestamp() AS now) c
		LEFT JOIN LATERAL (
			SELECT id, sold FROM tickets WHERE sold
			UNION ALL
			SELECT id, false FROM tickets WHERE held_until > c.now AND NOT sold
		) t ON true`)
	if err != nil {
		return SeatSnapshot{}, fmt.Errorf("read seat states: %w", err)
	}
	defer rows.Close()
	var snap SeatSnapshot
	for rows.Next() {
		var id *int64
		var sold *bool
		if err := rows.Scan(&snap.Cursor, &snap.Clock, &id, &sold); err != nil {
			return SeatSnapshot{}, fmt.Errorf("read seat states: %w", err)
		}
		switch {
		case id == nil:
		case *sold:
			snap.Sold = append(snap.Sold, *id)
		default:
			snap.Held = append(snap.Held, *id)
		}
	}
	if err := rows.Err(); err != nil {
		return SeatSnapshot{}, fmt.Errorf("read seat states: %w", err)
	}
	return snap, nil
}

// SeatChanges reads the seats whose state changed at or after cursor, and
// those whose hold expired in (since, now]: expiry writes nothing (a lapsed
// hold is lazily free), so only the clock finds them.
func (s *Store) SeatChanges(ctx context.Context, cursor string, since time.Time) (_ SeatChangeSet, err error) {
	defer s.errs.Deferred("seat_changes", &err)
	rows, err := s.pool.Query(ctx, `
		SELECT c.xmin::text, c.now, t.id, t.sold, coalesce(t.held_until > c.now, false)
		FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin, clock_timestamp() AS now) c
		LEFT JOIN LATERAL (
			SELECT id, sold, held_until FROM tickets WHERE changed_xid >= $1::xid8
			UNION
			SELECT id, sold, held_until FROM tickets WHERE held_until > $2 AND held_until <= c.now
		) t ON true`, cursor, since)
	if err != nil {
		return SeatChangeSet{}, fmt.Errorf("read seat changes since %s: %w", cursor, err)
	}
	defer rows.Close()
	var ch SeatChangeSet
	for rows.Next() {
		var id *int64
		var sold, held *bool
		if err := rows.Scan(&ch.Cursor, &ch.Clock, &id, &sold, &held); err != nil {
			return SeatChangeSet{}, fmt.Errorf("read seat changes since %s: %w", cursor, err)
		}
		if id != nil {
			ch.Seats = append(ch.Seats, SeatState{ID: *id, Sold: *sold, Held: *held})
		}
	}
	if err := rows.Err(); err != nil {
		return SeatChangeSet{}, fmt.Errorf("read seat changes since %s: %w", cursor, err)
	}
	return ch, nil
}
