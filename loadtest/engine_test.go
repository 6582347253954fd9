package loadtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSale is an HTTP server that records what it was asked and answers
// with answer (default: 409 ticket_sold), for engine tests that need no
// real sale.
type fakeSale struct {
	*httptest.Server
	n       atomic.Int64
	tickets atomic.Int64 // GET /v1/availability
	mu      sync.Mutex
	paths   map[string]int
	buyers  map[string]int
	hosts   map[string]int
	answer  func(n int64, w http.ResponseWriter, r *http.Request)
}

func newFakeSale(t *testing.T, answer func(n int64, w http.ResponseWriter, r *http.Request)) *fakeSale {
	f := &fakeSale{paths: map[string]int{}, buyers: map[string]int{}, hosts: map[string]int{}, answer: answer}
	f.Server = httptest.NewServer(f)
	t.Cleanup(f.Close)
	return f
}

func (f *fakeSale) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/availability" {
		f.answerAvailability(w)
		return
	}
	n := f.n.Add(1)
	var body struct{ BuyerID string }
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	f.paths[r.URL.Path]++
	f.buyers[body.BuyerID]++
	f.hosts[r.Host]++
	f.mu.Unlock()
	if f.answer != nil {
		f.answer(n, w, r)
		return
	}
	problem(w, 409, "ticket_sold")
}

// answerAvailability reports f.tickets, every one of them sold.
func (f *fakeSale) answerAvailability(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"tickets":%d,"sold":%d,"available":0}`, f.tickets.Load(), f.tickets.Load())
}

func problem(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":"https://fluxorder.io/problems/%s","status":%d,"code":%q}`, code, status, code)
}

func created(w http.ResponseWriter, ticket int64) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(201)
	fmt.Fprintf(w, `{"orderId":"0190c7b0-0000-7000-8000-%012d","ticketId":%d,"buyerId":"b"}`, ticket, ticket)
}

// testConfig is keyless: these tests count one request per purchase
// (retries have their own test, TestRun_InDoubtPurchases_...).
func testConfig(url string) Config {
	return Config{URL: url, Scenario: HotSeat, Seat: 1, Buyers: 10, Concurrency: 4, Requests: 200, Timeout: 5 * time.Second, Keyless: true}
}

func run(t *testing.T, cfg Config) Summary {
	t.Helper()
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("expected the test to run, got %v", err)
	}
	return res.Summary
}

func TestRun_ClosedModel_SendsExactlyTheRequestsOnKeptConnections(t *testing.T) {
	sale := newFakeSale(t, nil)
	cfg := testConfig(sale.URL)
	cfg.Requests, cfg.Concurrency = 500, 4
	s := run(t, cfg)
	if s.Requests != 500 || sale.n.Load() != 500 || s.Count(TicketSold) != 500 {
		t.Fatalf("expected 500 requests, all ticket_sold, seen by the server; got %d, %d ticket_sold, server saw %d", s.Requests, s.Count(TicketSold), sale.n.Load())
	}
	if s.Connections != 4 || s.StoppedBy != "requests" || s.Model != "closed" {
		t.Fatalf("expected 4 kept connections, stopped by requests, closed model; got %d, %s, %s", s.Connections, s.StoppedBy, s.Model)
	}
	if l := s.Outcomes["409_ticket_sold"]; l.P50Ms <= 0 || l.P50Ms > l.P90Ms || l.P90Ms > l.P99Ms || l.P99Ms > l.MaxMs {
		t.Fatalf("expected 0 < p50 <= p90 <= p99 <= max, got %+v", l)
	}
}

func TestRun_Scenarios_BuyTheRightSeatsWithEveryBuyer(t *testing.T) {
	cases := []struct {
		scenario Scenario
		check    func(paths map[string]int) error
	}{
		{HotSeat, func(p map[string]int) error {
			return want(p["/v1/tickets/7/purchase"] == 1000 && len(p) == 1, "every request on seat 7")
		}},
		{SellOut, func(p map[string]int) error {
			for path := range p {
				seat, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(path, "/v1/tickets/"), "/purchase"))
				if seat < 1 || seat > 5 {
					return fmt.Errorf("expected seats 1..5, got %s", path)
				}
			}
			return want(len(p) == 5, "all 5 seats tried")
		}},
		{AnySeat, func(p map[string]int) error {
			return want(p["/v1/purchase"] == 1000 && len(p) == 1, "every request on /v1/purchase")
		}},
		{Mixed, func(p map[string]int) error {
			// The hot seat 7 is outside the random seats 1..5, so each share is exact.
			random := 1000 - p["/v1/tickets/7/purchase"] - p["/v1/purchase"]
			return want(p["/v1/purchase"] == 200 && p["/v1/tickets/7/purchase"] == 300 && random == 500,
				"200 any-seat, 300 hot-seat and 500 random seats")
		}},
	}
	for _, c := range cases {
		t.Run(string(c.scenario), func(t *testing.T) {
			sale := newFakeSale(t, nil)
			cfg := testConfig(sale.URL)
			cfg.Scenario, cfg.Seat, cfg.Seats, cfg.Requests, cfg.Buyers = c.scenario, 7, 5, 1000, 4
			run(t, cfg)
			if err := c.check(sale.paths); err != nil {
				t.Fatalf("%v; paths seen: %v", err, sale.paths)
			}
			for i := 1; i <= 4; i++ {
				if n := sale.buyers[fmt.Sprintf("buyer-%d", i)]; n != 250 {
					t.Fatalf("expected buyer-%d to send 250 requests, got %d (%v)", i, n, sale.buyers)
				}
			}
		})
	}
}

func want(ok bool, what string) error {
	if !ok {
		return fmt.Errorf("expected %s", what)
	}
	return nil
}

func TestRun_SellOutWithoutSeats_ReadsThemFromAvailability(t *testing.T) {
	sale := newFakeSale(t, nil)
	sale.tickets.Store(3)
	cfg := testConfig(sale.URL)
	cfg.Scenario = SellOut
	s := run(t, cfg)
	if s.Seats != 3 || len(sale.paths) != 3 {
		t.Fatalf("expected 3 seats from /v1/availability, got %d seats and paths %v", s.Seats, sale.paths)
	}
}

func TestRun_OpenModel_SendsOnTheClock(t *testing.T) {
	sale := newFakeSale(t, nil)
	cfg := testConfig(sale.URL)
	cfg.Rate, cfg.Requests = 400, 200
	s := run(t, cfg)
	if s.Requests != 200 || s.Model != "open" || s.StoppedBy != "requests" {
		t.Fatalf("expected 200 requests in the open model, stopped by requests; got %d, %s, %s", s.Requests, s.Model, s.StoppedBy)
	}
	// 200 requests at 400/s take half a second; the machine may be busy.
	if s.DurationSeconds < 0.45 || s.DurationSeconds > 3 {
		t.Fatalf("expected about 0.5 s, got %.2f s", s.DurationSeconds)
	}
}

func TestRun_OpenModel_CountsQueueingFromTheScheduledTime(t *testing.T) {
	// One connection, 50 ms per answer, 100 requests/s asked: the server
	// can only serve 20/s, so the 20th request, scheduled at 0.19 s, is
	// answered at about 1 s. A closed-model client would report 50 ms.
	sale := newFakeSale(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		time.Sleep(50 * time.Millisecond) // the slow server under test, not a wait
		problem(w, 409, "ticket_sold")
	})
	cfg := testConfig(sale.URL)
	cfg.Rate, cfg.Requests, cfg.Concurrency = 100, 20, 1
	s := run(t, cfg)
	if got := s.Latency.MaxMs; got < 700 {
		t.Fatalf("expected the last request's latency to include its queueing (≈ 800 ms), got max %.1f ms", got)
	}
	cfg.Rate = 0
	if got := run(t, cfg).Latency.MaxMs; got > 700 {
		t.Fatalf("expected the closed model to report the service time (≈ 50 ms), got max %.1f ms", got)
	}
}

func TestRun_Duration_StopsByItself(t *testing.T) {
	cases := []struct {
		name string
		rate float64
	}{{"closed model", 0}, {"open model", 1000}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sale := newFakeSale(t, nil)
			cfg := testConfig(sale.URL)
			cfg.Requests, cfg.Duration, cfg.Rate = 0, 300*time.Millisecond, c.rate
			s := run(t, cfg)
			if s.StoppedBy != "duration" || s.DurationSeconds < 0.29 || s.DurationSeconds > 3 || s.Requests == 0 {
				t.Fatalf("expected about 0.3 s of requests, stopped by duration; got %.2f s, %d requests, %s", s.DurationSeconds, s.Requests, s.StoppedBy)
			}
		})
	}
}

func TestRun_UnexpectedAnswers_AreCountedWithAnExample(t *testing.T) {
	closedPort := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "http://" + ln.Addr().String()
	}
	cases := []struct {
		name        string
		answer      func(int64, http.ResponseWriter, *http.Request)
		url         string
		outcome     Outcome
		wantExample string
	}{
		{"a wrong seat", func(_ int64, w http.ResponseWriter, _ *http.Request) { problem(w, 404, "ticket_not_found") }, "", OtherAnswer, "404 ticket_not_found"},
		{"a plain-text error", func(_ int64, w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", 500) }, "", ServerError, "500 Internal Server Error"},
		{"an unavailable sale", func(_ int64, w http.ResponseWriter, _ *http.Request) { problem(w, 503, "unavailable") }, "", ServerError, "503 unavailable"},
		{"the buyer limit", func(_ int64, w http.ResponseWriter, _ *http.Request) { problem(w, 403, "buyer_limit_reached") }, "", BuyerLimit, ""},
		{"a server that hangs up", func(_ int64, w http.ResponseWriter, _ *http.Request) {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		}, "", TransportError, "EOF"},
		{"nobody listening", nil, closedPort(), TransportError, "connection refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sale := newFakeSale(t, c.answer)
			cfg := testConfig(sale.URL)
			if c.url != "" {
				cfg.URL = c.url
			}
			s := run(t, cfg)
			got := s.Outcomes[c.outcome.Key()]
			if got.Count != 200 || !strings.Contains(got.Example, c.wantExample) {
				t.Fatalf("expected 200 %v with an example containing %q, got %d with %q", c.outcome, c.wantExample, got.Count, got.Example)
			}
		})
	}
}

func TestRun_ServerClosingEachConnection_IsNotAnError(t *testing.T) {
	sale := newFakeSale(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "close")
		problem(w, 409, "ticket_locked")
	})
	cfg := testConfig(sale.URL)
	cfg.Requests = 50
	s := run(t, cfg)
	if s.Count(TicketLocked) != 50 || s.Connections != 50 {
		t.Fatalf("expected 50 ticket_locked on 50 connections, got %d on %d (%+v)", s.Count(TicketLocked), s.Connections, s.Outcomes)
	}
}

func TestRun_AnySeatUntilSoldOut_StopsWhenTheSaleSaysSo(t *testing.T) {
	sale := newFakeSale(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n <= 10 {
			created(w, n)
			return
		}
		problem(w, 409, "sold_out")
	})
	cfg := testConfig(sale.URL)
	cfg.Scenario, cfg.UntilSoldOut, cfg.Requests, cfg.Duration = AnySeat, true, 0, time.Minute
	start := time.Now()
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summary
	if s.StoppedBy != "sold-out" || time.Since(start) > 10*time.Second {
		t.Fatalf("expected a stop at sold out, got %s after %v", s.StoppedBy, time.Since(start))
	}
	if s.Count(Created) != 10 || len(res.Created) != 10 || res.Created[0].TicketID == 0 || res.Created[0].ID.String() == "" {
		t.Fatalf("expected 10 orders with ids and tickets, got %d: %+v", s.Count(Created), res.Created)
	}
}

func TestRun_SellOutUntilSoldOut_AsksAvailability(t *testing.T) {
	sale := newFakeSale(t, nil)
	sale.tickets.Store(10) // and none available: sold out from the first poll
	cfg := testConfig(sale.URL)
	cfg.Scenario, cfg.Seats, cfg.UntilSoldOut, cfg.Requests, cfg.Duration = SellOut, 10, true, 0, time.Minute
	s := run(t, cfg)
	if s.StoppedBy != "sold-out" || s.DurationSeconds > 10 {
		t.Fatalf("expected a stop at sold out within seconds, got %s after %.1f s", s.StoppedBy, s.DurationSeconds)
	}
}

// A sell-out's summary says when its last 201 came: the sale's own length,
// without the up to 200 ms the load takes to notice the sale sold out.
func TestRun_SellOut_LastCreatedIsTheLastOrder(t *testing.T) {
	var sale *fakeSale
	var lastOrder atomic.Int64 // ns since the test's start
	start := time.Now()
	sale = newFakeSale(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n > 10 {
			problem(w, 409, "ticket_sold")
			return
		}
		created(w, n)
		lastOrder.Store(int64(time.Since(start)))
		if n == 10 {
			sale.tickets.Store(10) // availability says sold out from now on
		}
	})
	cfg := testConfig(sale.URL)
	cfg.Scenario, cfg.Seats, cfg.UntilSoldOut, cfg.Requests, cfg.Duration = SellOut, 10, true, 0, time.Minute
	s := run(t, cfg)
	if s.StoppedBy != StoppedBySoldOut || s.Count(Created) != 10 {
		t.Fatalf("stopped by %s with %d orders, want sold-out with 10", s.StoppedBy, s.Count(Created))
	}
	last := time.Duration(lastOrder.Load()).Seconds()
	if s.LastCreatedSeconds <= 0 || s.LastCreatedSeconds < last-0.05 || s.LastCreatedSeconds > s.DurationSeconds {
		t.Fatalf("last 201 at %.3f s of %.3f s; the server answered its last order at %.3f s", s.LastCreatedSeconds, s.DurationSeconds, last)
	}
}

func TestRun_Interrupt_StopsAndSaysSo(t *testing.T) {
	sale := newFakeSale(t, nil)
	cfg := testConfig(sale.URL)
	cfg.Requests, cfg.Duration = 0, time.Minute
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Summary.Interrupted() || res.Summary.DurationSeconds > 10 {
		t.Fatalf("expected an interrupted test, got stopped by %s after %.1f s", res.Summary.StoppedBy, res.Summary.DurationSeconds)
	}
}

func TestRun_HTTPSWithAHostHeader(t *testing.T) {
	var hosts sync.Map
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts.Store(r.Host, true)
		problem(w, 409, "ticket_sold")
	}))
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	cfg := testConfig(srv.URL)
	cfg.Host = "demo.sales.example"
	cfg.TLS = &tls.Config{RootCAs: roots, ServerName: "example.com"} // httptest's certificate names example.com
	s := run(t, cfg)
	if s.Count(TicketSold) != 200 || s.Connections != 4 {
		t.Fatalf("expected 200 ticket_sold over 4 TLS connections, got %+v", s)
	}
	if _, ok := hosts.Load("demo.sales.example"); !ok {
		var seen []any
		hosts.Range(func(k, _ any) bool { seen = append(seen, k); return true })
		t.Fatalf("expected Host demo.sales.example, got %v", seen)
	}
}

func TestRun_Progress_ReportsAndEndsWithDone(t *testing.T) {
	sale := newFakeSale(t, nil)
	cfg := testConfig(sale.URL)
	cfg.Requests, cfg.Duration = 0, 300*time.Millisecond
	var mu sync.Mutex
	var snaps []Snapshot
	cfg.Progress = func(s Snapshot) { mu.Lock(); snaps = append(snaps, s); mu.Unlock() }
	cfg.ProgressEvery = 50 * time.Millisecond
	run(t, cfg)
	if len(snaps) < 2 || !snaps[len(snaps)-1].Done || snaps[len(snaps)-1].Total == 0 {
		t.Fatalf("expected several snapshots ending with a Done one that counts requests, got %+v", snaps)
	}
}

func TestProgressPrinter_RedrawsOnATerminalAndAppendsOtherwise(t *testing.T) {
	snap := Snapshot{Elapsed: 2 * time.Second, Total: 12345}
	snap.Counts[TicketSold] = 12345
	cases := []struct {
		terminal bool
		want     string
	}{
		{true, "\r\033[K   2.0s 12,345 req 6,173/s · sold 12,345\r\033[K"},
		{false, "   2.0s 12,345 req 6,173/s · sold 12,345\n"},
	}
	for _, c := range cases {
		var b strings.Builder
		p := NewProgressPrinter(&b, c.terminal)
		p(snap)
		p(Snapshot{Done: true})
		if b.String() != c.want {
			t.Fatalf("terminal=%v: expected %q, got %q", c.terminal, c.want, b.String())
		}
	}
}

func TestPicker_SellOutVisitsEverySeatOncePerRound(t *testing.T) {
	for _, seats := range []int64{1, 2, 3, 10, 100, 1000, 100_000} {
		p := newPicker(Config{Scenario: SellOut, Seats: seats, Buyers: 7})
		seen := make(map[int64]bool, seats)
		for k := range seats {
			seat, _ := p.pick(k, nil)
			if seat < 1 || seat > seats || seen[seat] {
				t.Fatalf("%d seats: request %d picked seat %d (seen before: %v)", seats, k, seat, seen[seat])
			}
			seen[seat] = true
		}
	}
}
