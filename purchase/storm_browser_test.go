package purchase

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flux-order/flux-order/loadtest"
)

// collectSeats scrolls the seat map from top to bottom, one screen at a
// time, and returns the data-state of every seat it saw rendered: only the
// seats in view are DOM nodes, so reading them all takes a scroll.
const collectSeats = `(async () => {
	const g = document.getElementById('grid');
	const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
	const seen = {};
	for (let top = 0; ; top += Math.max(1, g.clientHeight)) {
		g.scrollTop = top;
		await frame();
		for (const b of document.querySelectorAll('[data-seat]')) seen[b.dataset.seat] = b.dataset.state;
		if (top + g.clientHeight >= g.scrollHeight) break;
	}
	g.scrollTop = 0;
	return seen;
})()`

// pageSeats is every seat's data-state in the page, by seat id.
func pageSeats(t *testing.T, tab context.Context) map[string]string {
	t.Helper()
	seen, err := chromedp.Run(tab, chromedp.Evaluate[map[string]string](collectSeats, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("collect the seats: %v", err)
	}
	return seen
}

// dbSeats is every seat's state in Postgres, as the page names them.
func (s *testSale) dbSeats() map[string]string {
	s.t.Helper()
	rows, err := s.db.Query(context.Background(), `SELECT id, CASE WHEN sold THEN 'sold'
		WHEN held_until > clock_timestamp() THEN 'held' ELSE 'available' END FROM tickets`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id int64
		var st string
		if err := rows.Scan(&id, &st); err != nil {
			s.t.Fatal(err)
		}
		out[fmt.Sprint(id)] = st
	}
	return out
}

// The page open through a flux-order loadtest storm (the loadtest engine,
// in-process, bounded by requests and time) ends with every seat's
// data-state equal to Postgres: no sold seat shown available, nothing lost
// between the hub's polls.
func TestBrowser_AfterALoadtestStorm_EverySeatMatchesPostgres(t *testing.T) {
	const seats = 600
	s := newTestSale(t, seats)
	tab := newTab(t, 2*time.Minute)
	openSalePage(t, tab, s.pods[0].srv.URL+"/", "watcher")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := loadtest.Run(ctx, loadtest.Config{
		URL: s.pods[0].srv.URL, Scenario: loadtest.Mixed, Seats: seats, Seat: 1, Buyers: 200,
		Concurrency: 32, Requests: 900, Duration: 20 * time.Second, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	a := s.audit()
	t.Logf("storm: %d requests, %d orders (%d of %d seats sold)", res.Summary.Requests, len(res.Created), a.sold, seats)
	if a.sold == 0 || a.sold == seats {
		t.Fatalf("the storm sold %d of %d seats: the comparison needs both sold and available seats", a.sold, seats)
	}
	want := fmt.Sprint(a.sold)
	if _, err := chromedp.Run(tab, chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelector('[data-testid="sold"]').textContent === %q`, want),
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(2*time.Second))); err != nil {
		t.Fatalf("the page's sold counter never reached %s: %v", want, err)
	}
	got, db := pageSeats(t, tab), s.dbSeats()
	if len(got) != seats || len(db) != seats {
		t.Fatalf("the page rendered %d seats while scrolling, Postgres has %d, want %d", len(got), len(db), seats)
	}
	for id, st := range db {
		if got[id] != st {
			t.Errorf("seat %s: the page shows %q, Postgres says %q", id, got[id], st)
		}
	}
}
