package loadtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/orderstore"
)

func TestHoldConfirmScenario_SellsOutThroughHoldsConfirmsReleasesExpiries_Audited(t *testing.T) {
	const seats = 60
	ctx := t.Context()
	url, dbURL := startSale(t, seats, func(c *purchase.Config) { c.HoldTTL = time.Second })
	auditor, err := NewAuditor(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	lc := Config{URL: url, Scenario: HoldConfirm, Seat: 1, Buyers: 500, Concurrency: 16, Duration: time.Minute,
		UntilSoldOut: true, Timeout: 10 * time.Second, ThinkTime: 100 * time.Millisecond, ConfirmShare: 0.5, ReleaseShare: 0.5}
	res, err := Run(ctx, lc)
	if err != nil {
		t.Fatal(err)
	}
	s, h := res.Summary, res.Summary.Holds
	t.Logf("%s", h.text())
	if h == nil || s.StoppedBy != stopSoldOut || s.Count(Created) != seats || h.Confirmed != seats {
		t.Fatalf("want every seat sold through a confirmed hold, stopped by sold-out; got stopped by %s, %d created, %+v", s.StoppedBy, s.Count(Created), h)
	}
	if h.Released == 0 || h.LetExpire == 0 || h.Errors != 0 || h.Held < seats+h.Released+h.LetExpire-16 {
		t.Fatalf("want releases and expiries among the checkouts, no errors; got %+v", h)
	}
	r := auditor.Check(ctx, res.Created, func(ctx context.Context) (Availability, error) { return FetchAvailability(ctx, lc) }, true)
	if !r.OK || r.NewOrders != seats || r.Holds < h.Held {
		t.Fatalf("want the audit to pass with %d new orders and every hold checked, got %+v", seats, r)
	}
}

func TestHoldConfirmScenario_ThinkingPastTheHold_ConfirmsGet410AndNoOrder(t *testing.T) {
	ctx := t.Context()
	url, dbURL := startSale(t, 10, func(c *purchase.Config) { c.HoldTTL = time.Second })
	auditor, err := NewAuditor(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	lc := Config{URL: url, Scenario: HoldConfirm, Seat: 1, Seats: 10, Buyers: 5, Concurrency: 5, Requests: 5,
		Timeout: 10 * time.Second, ThinkTime: 1200 * time.Millisecond, ConfirmShare: 1}
	res, err := Run(ctx, lc)
	if err != nil {
		t.Fatal(err)
	}
	if h := res.Summary.Holds; h.Held != 5 || h.ConfirmExpired != 5 || res.Summary.Count(Created) != 0 {
		t.Fatalf("want 5 holds whose confirms all got 410, got %+v", h)
	}
	if r := auditor.Check(ctx, res.Created, func(ctx context.Context) (Availability, error) { return FetchAvailability(ctx, lc) }, true); !r.OK || r.NewOrders != 0 || r.Holds != 5 {
		t.Fatalf("want a passing audit with no order and 5 holds, got %+v", r)
	}
}

func TestAudit_Holds_CatchesAnOrderFromAnExpiredHoldAndASaleDuringAHold(t *testing.T) {
	ctx := t.Context()
	sale := newAuditedSale(t, 20)
	auditor, err := NewAuditor(ctx, sale.url)
	if err != nil {
		t.Fatal(err)
	}
	// A correct checkout passes.
	h, _, err := sale.store.PlaceHold(ctx, orderstore.HoldRequest{TicketID: 1, HoldID: uuid.New(), BuyerID: "buyer-1", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	o, _, err := sale.store.ConfirmHold(ctx, h.ID, "buyer-1", uuid.New(), "pay")
	if err != nil {
		t.Fatal(err)
	}
	created := []Order{{ID: o.ID, TicketID: 1}}
	if r := auditor.Check(ctx, created, sale.availability, true); !r.OK || r.Holds != 1 {
		t.Fatalf("a confirmed hold must pass: %+v", r)
	}

	// A confirm that ignored the expiry, as a broken confirm_hold would.
	late, _, err := sale.store.PlaceHold(ctx, orderstore.HoldRequest{TicketID: 2, HoldID: uuid.New(), BuyerID: "buyer-2", TTL: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Its order must come after the expiry by the database's clock, which
	// stamps the order's purchased_at.
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the 100 ms hold expired", func() error {
		h, err := sale.store.Hold(ctx, late.ID)
		if err == nil && h.State != orderstore.HoldExpired {
			err = fmt.Errorf("hold %s", h.State)
		}
		return err
	})
	lateOrder := uuid.New()
	sale.plantSale(2, lateOrder, "buyer-2", &late.ID)
	sale.exec(`UPDATE holds SET state = 'confirmed', order_id = $1 WHERE id = $2`, lateOrder, late.ID)
	// A sale that ignored another buyer's live hold, as a broken fence would.
	if _, _, err := sale.store.PlaceHold(ctx, orderstore.HoldRequest{TicketID: 3, HoldID: uuid.New(), BuyerID: "buyer-3", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	stolen := uuid.New()
	sale.plantSale(3, stolen, "mallory", nil)
	created = append(created, Order{ID: lateOrder, TicketID: 2}, Order{ID: stolen, TicketID: 3})

	r := auditor.Check(ctx, created, sale.availability, true)
	problems := strings.Join(r.Problems, " | ")
	for _, want := range []string{"1 orders from an expired hold (e.g. ticket 2)", "1 seats held by one buyer and sold to another", "(e.g. ticket 3)"} {
		if !strings.Contains(problems, want) {
			t.Fatalf("want a problem containing %q, got %q", want, problems)
		}
	}
}

// plantSale writes an order for ticket past every fence, keeping the
// counters consistent so that only the hold checks can see it.
func (s *auditedSale) plantSale(ticket int64, id uuid.UUID, buyer string, hold *uuid.UUID) {
	s.exec(`UPDATE tickets SET sold = true, held_until = NULL WHERE id = $1`, ticket)
	s.exec(`UPDATE sold_counter SET sold = sold + 1 WHERE shard = $1 % 64`, ticket)
	s.exec(`INSERT INTO orders (id, ticket_id, buyer_id, hold_id) VALUES ($1, $2, $3, $4)`, id, ticket, buyer, hold)
}

// checkoutSale is an HTTP checkout whose answers depend on the seat (seats
// 1..40, each held once by the scenario's walk), and that counts what it
// is asked: the hold-confirm client's own handling of every answer, on
// plain or TLS connections.
type checkoutSale struct {
	srv                       *httptest.Server
	conns                     atomic.Int64
	mu                        sync.Mutex
	holds, confirms, releases map[int64]int   // requests per seat
	bad                       []string        // requests not as the scenario sends them
	closed                    map[string]bool // client addresses answered "Connection: close"
}

func newCheckoutSale(t *testing.T, tlsOn bool, idle time.Duration) *checkoutSale {
	c := &checkoutSale{holds: map[int64]int{}, confirms: map[int64]int{}, releases: map[int64]int{}, closed: map[string]bool{}}
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(c.serve))
	c.srv.Config.IdleTimeout = idle
	c.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			c.conns.Add(1)
		}
	}
	if tlsOn {
		c.srv.StartTLS()
	} else {
		c.srv.Start()
	}
	t.Cleanup(c.srv.Close)
	return c
}

// config is the scenario against c: 40 checkouts, each of another seat.
func (c *checkoutSale) config() Config {
	cfg := Config{URL: c.srv.URL, Scenario: HoldConfirm, Seat: 1, Seats: 40, Buyers: 7, Concurrency: 4, Requests: 40,
		Timeout: 5 * time.Second, ConfirmShare: 1}
	if c.srv.TLS != nil {
		roots := x509.NewCertPool()
		roots.AddCert(c.srv.Certificate())
		cfg.TLS = &tls.Config{RootCAs: roots, ServerName: "example.com"} // httptest's certificate names example.com
	}
	return cfg
}

// A hold's id names its seat, so that confirms and releases can be checked.
func holdOf(seat int64) uuid.UUID {
	return uuid.MustParse(fmt.Sprintf("0190c7b0-0000-7000-8000-%012d", seat))
}

func (c *checkoutSale) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct{ BuyerID, PaymentRef string }
	_ = json.Unmarshal(body, &req)
	c.mu.Lock()
	defer c.mu.Unlock()
	complain := func(format string, a ...any) {
		c.bad = append(c.bad, fmt.Sprintf("%s %s: ", r.Method, r.URL.Path)+fmt.Sprintf(format, a...))
		problem(w, 400, "bad_request")
	}
	if r.Header.Get("User-Agent") != "flux-order-loadtest" || r.Header.Get("Idempotency-Key") != "" {
		complain("headers %v", r.Header)
		return
	}
	if c.closed[r.RemoteAddr] {
		complain("sent on a connection answered Connection: close")
		return
	}
	var seat int64
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/hold"):
		if _, err := fmt.Sscanf(r.URL.Path, "/v1/tickets/%d/hold", &seat); err != nil || !strings.HasPrefix(req.BuyerID, "buyer-") {
			complain("body %s", body)
			return
		}
		c.holds[seat]++
		switch seat % 10 {
		case 1:
			problem(w, 409, "ticket_held")
			return
		case 2:
			problem(w, 503, "unavailable")
			return
		case 3:
			w.Header().Set("Connection", "close") // the client must dial again
			c.closed[r.RemoteAddr] = true
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		fmt.Fprintf(w, `{"holdId":%q,"ticketId":%d}`, holdOf(seat), seat)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/confirm"):
		id, _ := uuid.Parse(strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/holds/"), "/confirm"))
		if _, err := fmt.Sscanf(id.String()[24:], "%d", &seat); err != nil || holdOf(seat) != id ||
			!strings.HasPrefix(req.BuyerID, "buyer-") || !strings.HasPrefix(req.PaymentRef, "lt-") {
			complain("body %s", body)
			return
		}
		c.confirms[seat]++
		switch seat % 10 {
		case 4:
			problem(w, 410, "hold_expired")
		case 5:
			problem(w, 503, "unavailable")
		default:
			created(w, seat)
		}
	case r.Method == http.MethodDelete:
		id, err := uuid.Parse(strings.TrimPrefix(r.URL.Path, "/v1/holds/"))
		if err != nil || len(body) != 0 {
			complain("body %s", body)
			return
		}
		_, _ = fmt.Sscanf(id.String()[24:], "%d", &seat)
		c.releases[seat]++
		if seat%10 == 6 {
			problem(w, 404, "hold_not_found")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		complain("unexpected")
	}
}

// perSeat says whether every seat in seats was asked exactly once and no
// other seat at all.
func perSeat(m map[int64]int, seats func(int64) bool) bool {
	n := 0
	for seat := int64(1); seat <= 40; seat++ {
		if seats(seat) {
			n++
			if m[seat] != 1 {
				return false
			}
		}
	}
	return len(m) == n
}

// Every answer of a checkout is counted as net/http's client counted it:
// a hold refused 409 by its code, a 503 hold as 5xx and a 503 confirm as an
// error, each sent once (the scenario retries nothing); 410 confirms as
// expired. Each buyer keeps its connection, and dials again after an answer
// with Connection: close (4 of them: 4 + 4 connections), over TLS too.
func TestHoldConfirmScenario_CountsEveryAnswerOnKeptConnections(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			sale := newCheckoutSale(t, tlsOn, 0)
			res, err := Run(t.Context(), sale.config())
			if err != nil {
				t.Fatal(err)
			}
			s, h := res.Summary, res.Summary.Holds
			sale.mu.Lock()
			defer sale.mu.Unlock()
			if len(sale.bad) > 0 {
				t.Fatalf("requests not as sent before: %q", sale.bad)
			}
			held := func(seat int64) bool { return seat%10 != 1 && seat%10 != 2 }
			if !perSeat(sale.holds, func(int64) bool { return true }) || !perSeat(sale.confirms, held) || len(sale.releases) != 0 {
				t.Fatalf("want one hold per seat and one confirm per held seat, got holds %v confirms %v releases %v", sale.holds, sale.confirms, sale.releases)
			}
			want := HoldSummary{Attempts: 40, Held: 32, Refused: map[string]int64{"ticket_held": 4, "5xx": 4}, Confirmed: 24, ConfirmExpired: 4, Errors: 4}
			if h.Attempts != want.Attempts || h.Held != want.Held || !maps.Equal(h.Refused, want.Refused) || h.Confirmed != want.Confirmed ||
				h.ConfirmExpired != want.ConfirmExpired || h.Errors != want.Errors || h.Released != 0 || h.LetExpire != 0 {
				t.Fatalf("want %+v, got %+v", want, *h)
			}
			if s.Count(Created) != 24 || s.Count(ServerError) != 4 || s.Requests != 32 || len(res.Created) != 24 || res.Created[0].TicketID == 0 {
				t.Fatalf("want the 32 confirms as outcomes (24 created, 4 503s), got %d requests %+v", s.Requests, s.Outcomes)
			}
			// Each of the 4 connections answered "Connection: close" (a held
			// seat: its buyer confirms next) is followed by a new one, and no
			// request is sent on it again (serve). A buyer that the others
			// left no checkout to (a loaded machine may start it late) opens
			// none: 1 to 4 buyers' connections, and 4 more.
			if c := s.Connections; c < 5 || c > 8 || sale.conns.Load() != c {
				t.Fatalf("want 5..8 connections (1..4 buyers, 4 closed by the server), client opened %d, server accepted %d", c, sale.conns.Load())
			}
		})
	}
}

// Abandoning buyers release their holds with DELETE (one answered 404: an
// error); a buyer whose connection the server closed while it thought
// (IdleTimeout < ThinkTime) dials again instead of failing its next
// request, as net/http's client would.
func TestHoldConfirmScenario_ReleasesAfterThinkingPastTheServersIdleTimeout(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			// The idle timeout is past staleAfter, so that a busy machine's
			// pause between two requests is checked before the server closes.
			sale := newCheckoutSale(t, tlsOn, 2*staleAfter)
			cfg := sale.config()
			cfg.Requests, cfg.ThinkTime, cfg.ConfirmShare, cfg.ReleaseShare = 20, 5*staleAfter, 0, 1
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			h := res.Summary.Holds
			sale.mu.Lock()
			defer sale.mu.Unlock()
			if len(sale.bad) > 0 {
				t.Fatalf("requests not as sent before: %q", sale.bad)
			}
			// Seats 1..20 in the walk of 40 seats: which ones depends on
			// the stride, so count them from what the server saw.
			var released, missing, held int64
			for seat := range sale.holds {
				if seat%10 == 1 || seat%10 == 2 {
					continue
				}
				held++
				if seat%10 == 6 {
					missing++
				} else {
					released++
				}
			}
			if h.Attempts != 20 || h.Held != held || h.Released != released || h.Errors != missing || h.LetExpire != 0 || len(sale.releases) != int(held) {
				t.Fatalf("want %d held, %d released, %d errors (404), got %+v (server saw %d releases)", held, released, missing, *h, len(sale.releases))
			}
			// Each release follows a think longer than the server's idle
			// timeout, on a new connection (a stalled machine may add more).
			if c := res.Summary.Connections; c < 4+held || sale.conns.Load() != c {
				t.Fatalf("want %d+ connections (4 and one per release), client opened %d, server accepted %d", 4+held, c, sale.conns.Load())
			}
		})
	}
}
