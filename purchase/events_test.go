package purchase_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/ssetest"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/seatfeed"
)

// A page gets the sale's facts and a snapshot of every seat first, then a
// delta within 1 s of a sale, with the counters.
func TestEvents_SnapshotThenDeltas(t *testing.T) {
	s := newTestSale(t, 9, func(c *purchase.Config) { c.DisplayName = "Feed" })
	if a := s.Buy(2, "early"); a.Status != http.StatusCreated {
		t.Fatalf("buy: %d %s", a.Status, a.Code)
	}
	events, stop := ssetest.Open(t, s.Pods[0].URL)
	defer stop()
	var facts sale.Facts
	if err := json.Unmarshal([]byte(ssetest.Next(t, events, "sale", 5*time.Second).Data), &facts); err != nil || facts.DisplayName != "Feed" {
		t.Fatalf("sale event: %+v %v", facts, err)
	}
	d, states := ssetest.DecodeSnapshot(t, ssetest.Next(t, events, "snapshot", 5*time.Second))
	if d.Tickets != 9 || d.Sold != 1 || d.Held != 0 || d.Available != 8 {
		t.Fatalf("snapshot counts: %+v", d.Counts)
	}
	for id := int64(1); id <= 9; id++ {
		if want := map[bool]byte{true: ssetest.Sold, false: ssetest.Available}[id == 2]; states[id] != want {
			t.Fatalf("snapshot: seat %d state %d, want %d", id, states[id], want)
		}
	}
	start := time.Now()
	if a := s.Buy(7, "bob"); a.Status != http.StatusCreated {
		t.Fatalf("buy: %d %s", a.Status, a.Code)
	}
	c := ssetest.WaitSeat(t, events, 7, ssetest.Sold, time.Second)
	t.Logf("seat 7 sold on the stream %v after the 201", time.Since(start))
	if c.Sold != 2 || c.Available != 7 {
		t.Fatalf("counts after the sale: %+v", c)
	}
	// The display name is live on the stream too.
	s.Pods[0].Svc.SetDisplayName("Renamed")
	if err := json.Unmarshal([]byte(ssetest.Next(t, events, "sale", 2*time.Second).Data), &facts); err != nil || facts.DisplayName != "Renamed" {
		t.Fatalf("sale event after the rename: %+v %v", facts, err)
	}
}

// A hold shows as held, and as available again once it lapses, with no
// write at expiry: the feed finds it by held_until.
func TestEvents_HoldThenExpiry(t *testing.T) {
	s := newTestSale(t, 5)
	events, stop := ssetest.Open(t, s.Pods[0].URL)
	defer stop()
	ssetest.Next(t, events, "snapshot", 5*time.Second)
	if _, err := s.DB.Exec(context.Background(), `SELECT * FROM hold_seat(3, gen_random_uuid(), 'carol', 700, 0)`); err != nil {
		t.Fatal(err)
	}
	if c := ssetest.WaitSeat(t, events, 3, ssetest.Held, time.Second); c.Held != 1 || c.Available != 4 {
		t.Fatalf("counts with the hold: %+v", c)
	}
	if c := ssetest.WaitSeat(t, events, 3, ssetest.Available, 2*time.Second); c.Held != 0 || c.Available != 5 {
		t.Fatalf("counts after expiry: %+v", c)
	}
}

// Gap-free: a transaction that took its xid first but commits last is not
// skipped by the cursor (a "changed_xid > highest seen" cursor would).
func TestEvents_OutOfOrderCommitsAreNotMissed(t *testing.T) {
	s := newTestSale(t, 5)
	events, stop := ssetest.Open(t, s.Pods[0].URL)
	defer stop()
	ssetest.Next(t, events, "snapshot", 5*time.Second)
	ctx := context.Background()
	early, err := s.DB.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = early.Rollback(ctx) }()
	if _, err := early.Exec(ctx, `SELECT * FROM hold_seat(1, gen_random_uuid(), 'early', 60000, 0)`); err != nil {
		t.Fatal(err)
	}
	if a := s.Buy(2, "late"); a.Status != http.StatusCreated {
		t.Fatalf("buy: %d %s", a.Status, a.Code)
	}
	ssetest.WaitSeat(t, events, 2, ssetest.Sold, time.Second)
	time.Sleep(2 * seatfeed.PollInterval) // polls pass while the early transaction is open
	if err := early.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	ssetest.WaitSeat(t, events, 1, ssetest.Held, time.Second)
}

// On SIGTERM the streams end when the listener closes, so they do not hold
// the drain: Serve returns long before the grace ends.
func TestEvents_StreamsEndOnShutdown(t *testing.T) {
	s := newTestSale(t, 5)
	pod := s.Run(func(c *purchase.Config) { c.ShutdownGrace, c.DrainDelay = 10*time.Second, 200*time.Millisecond }, nil)
	cfg, base, sigterm, served := pod.Cfg, pod.URL, pod.SIGTERM, pod.Served
	events, stop := ssetest.Open(t, base)
	defer stop()
	ssetest.Next(t, events, "snapshot", 5*time.Second)
	start := time.Now()
	sigterm()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Serve still running %v after SIGTERM with a page connected (grace %v)", time.Since(start), cfg.ShutdownGrace)
	}
	for range events { // the stream ended
	}
	t.Logf("drained in %v with a stream open", time.Since(start))
}
