package purchase_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flux-order/flux-order/internal/testservers"
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
	s.T.Helper()
	rows, err := s.DB.Query(context.Background(), `SELECT id, CASE WHEN sold THEN 'sold'
		WHEN held_until > clock_timestamp() THEN 'held' ELSE 'available' END FROM tickets`)
	if err != nil {
		s.T.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id int64
		var st string
		if err := rows.Scan(&id, &st); err != nil {
			s.T.Fatal(err)
		}
		out[fmt.Sprint(id)] = st
	}
	return out
}

// The page open through a flux-order loadtest storm (the loadtest engine,
// in-process, bounded by requests and time) ends with every seat's
// data-state equal to Postgres: no sold seat shown available, nothing lost
// between the hub's polls. One storm buys (mixed: random seats, a hot seat,
// any seat); one holds (hold-confirm: confirm, release or let expire).
func TestBrowser_AfterALoadtestStorm_EverySeatMatchesPostgres(t *testing.T) {
	const seats = 600
	for _, c := range []struct {
		name    string
		holdTTL time.Duration
		storm   loadtest.Config
	}{
		{"purchases", 0, loadtest.Config{Scenario: loadtest.Mixed, Seat: 1, Requests: 900}},
		{"holds", 2 * time.Second, loadtest.Config{Scenario: loadtest.HoldConfirm, Seat: 1, Requests: 400,
			ThinkTime: 50 * time.Millisecond, ConfirmShare: 0.5, ReleaseShare: 0.3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newTestSale(t, seats, withHolds(c.holdTTL))
			tab := newTab(t, 2*time.Minute)
			openSalePage(t, tab, s.Pods[0].URL+"/", "watcher")

			// The most seats the page ever showed held, watched live.
			run(t, tab, "watch the held counter", chromedp.Evaluate[chromedp.Void](`(() => {
				const el = document.querySelector('[data-testid="held"]');
				window.maxHeld = 0;
				new MutationObserver(() => { window.maxHeld = Math.max(window.maxHeld, Number(el.textContent.replace(/\D/g, ''))); })
					.observe(el, {childList: true, characterData: true, subtree: true});
			})()`))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cfg := c.storm
			cfg.URL, cfg.Seats, cfg.Buyers, cfg.Concurrency = s.Pods[0].URL, seats, 200, 32
			cfg.Duration, cfg.Timeout = 20*time.Second, 5*time.Second
			res, err := loadtest.Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			// Holds left by the storm lapse by themselves: wait them out, so
			// the comparison below is of settled seats.
			testservers.Eventually(t, c.holdTTL+5*time.Second, 20*time.Millisecond, "the storm's holds to end", testservers.Holds(func() bool {
				var held int64
				_ = s.DB.QueryRow(context.Background(), `SELECT count(*) FROM tickets WHERE NOT sold AND held_until > clock_timestamp()`).Scan(&held)
				return held == 0
			}))
			a := s.Audit()
			t.Logf("storm: %d requests, %d orders (%d of %d seats sold)", res.Summary.Requests, len(res.Created), a.Sold, seats)
			if a.Sold == 0 || a.Sold == seats {
				t.Fatalf("the storm sold %d of %d seats: the comparison needs both sold and available seats", a.Sold, seats)
			}
			want := fmt.Sprint(a.Sold)
			if _, err := chromedp.Run(tab, chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelector('[data-testid="sold"]').textContent === %q
				&& document.querySelector('[data-testid="held"]').textContent === "0"`, want),
				chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(2*time.Second))); err != nil {
				t.Fatalf("the page's counters never reached %s sold, 0 held: %v", want, err)
			}
			maxHeld := eval[int](t, tab, `window.maxHeld`)
			t.Logf("the page showed up to %d seats held during the storm", maxHeld)
			if c.holdTTL > 0 && maxHeld == 0 {
				t.Fatal("the page never showed a held seat during a hold storm")
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
		})
	}
}
