package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/seatfeed"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// readProblem decodes a problem answer, failing unless it is one.
func readProblem(t *testing.T, rec interface {
	Result() *http.Response
}) (Problem, *http.Response) {
	t.Helper()
	resp := rec.Result()
	var p Problem
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	return p, resp
}

// Every row of the problem table, answered through a purchase: its status,
// code, type, title, the fixed sentence as detail, and the headers its
// status asks for (Retry-After on 503, WWW-Authenticate on 401).
func TestProblems_EveryCodeIsAnsweredWithItsRow(t *testing.T) {
	seen := map[string]bool{}
	for _, row := range problems {
		t.Run(row.code+"/"+row.err.Error(), func(t *testing.T) {
			f := newFixture()
			var rec interface{ Result() *http.Response }
			switch row.err {
			case errMethodNotAllowed:
				rec = f.do(http.MethodGet, "/v1/purchase", "", nil)
			case errNoSuchEndpoint:
				rec = f.do(http.MethodGet, "/v1/nothing", "", nil)
			default:
				f.checkout.err = row.err
				rec = f.do(http.MethodPost, "/v1/tickets/1/purchase", `{"buyerId":"alice"}`, nil)
			}
			p, resp := readProblem(t, rec)
			if resp.StatusCode != row.status || p.Status != row.status || p.Code != row.code ||
				p.Type != problemTypeBase+row.code || p.Title != row.title || p.Detail != row.err.Error() {
				t.Fatalf("got %d %+v, want %d %s %q %q", resp.StatusCode, p, row.status, row.code, row.title, row.err)
			}
			switch row.status {
			case http.StatusServiceUnavailable, http.StatusTooManyRequests:
				if resp.Header.Get("Retry-After") == "" {
					t.Fatalf("a %d must carry Retry-After", row.status)
				}
			case http.StatusUnauthorized:
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
					t.Fatalf("a 401 must name its scheme, got %q", resp.Header.Get("WWW-Authenticate"))
				}
			case http.StatusMethodNotAllowed:
				if resp.Header.Get("Allow") != "POST" {
					t.Fatalf("a 405 must say what is allowed, got %q", resp.Header.Get("Allow"))
				}
			}
			seen[row.code] = true
		})
	}
	if len(seen) == 0 {
		t.Fatal("no problem rows")
	}
	t.Run("an error outside the table is internal and says nothing of itself", func(t *testing.T) {
		f := newFixture()
		f.checkout.err = errors.New("pq: connection to 10.0.0.7 refused")
		p, resp := readProblem(t, f.do(http.MethodPost, "/v1/tickets/1/purchase", `{"buyerId":"alice"}`, nil))
		if resp.StatusCode != 500 || p.Code != "internal" || strings.Contains(p.Detail, "10.0.0.7") {
			t.Fatalf("got %d %+v", resp.StatusCode, p)
		}
	})
	t.Run("a driver error under a cause answers the cause's sentence only", func(t *testing.T) {
		f := newFixture()
		f.checkout.err = sale.Unavailable(sale.ErrDatabaseUnavailable, errors.New("dial tcp 10.0.0.7:5432: refused"))
		p, _ := readProblem(t, f.do(http.MethodPost, "/v1/tickets/1/purchase", `{"buyerId":"alice"}`, nil))
		if p.Code != "unavailable" || p.Detail != sale.ErrDatabaseUnavailable.Error() {
			t.Fatalf("got %+v", p)
		}
	})
	t.Run("a pending order names its order", func(t *testing.T) {
		f := newFixture()
		id := uuid.New()
		f.checkout.err = &sale.PendingOrderError{OrderID: id, Err: sale.Unavailable(sale.ErrDatabaseUnavailable, errors.New("x"))}
		p, _ := readProblem(t, f.do(http.MethodPost, "/v1/tickets/1/purchase", `{"buyerId":"alice"}`, nil))
		if p.Code != "unavailable" || p.OrderID != id.String() {
			t.Fatalf("got %+v, want orderId %s", p, id)
		}
	})
	t.Run("Retry-After of a RetryAfterError", func(t *testing.T) {
		f := newFixture()
		f.checkout.err = &sale.RetryAfterError{Seconds: 7, Err: sale.ErrOrderPending}
		_, resp := readProblem(t, f.do(http.MethodGet, "/v1/orders/"+uuid.NewString(), "", nil))
		if resp.Header.Get("Retry-After") != "7" {
			t.Fatalf("Retry-After %q, want 7", resp.Header.Get("Retry-After"))
		}
	})
}

// The strict input of a purchase: each bad body or header is 400
// invalid_request (or its own code), checkout is never called, the detail
// never quotes the input, and a refused key is not echoed.
func TestPurchase_StrictInput(t *testing.T) {
	long := strings.Repeat("b", sale.MaxBuyerIDLen+1)
	cases := []struct {
		name, path, body string
		header           map[string]string
		status           int
		code             string
	}{
		{"malformed json", "/v1/tickets/1/purchase", `{"buyerId":`, nil, 400, "invalid_request"},
		{"not an object", "/v1/tickets/1/purchase", `["alice"]`, nil, 400, "invalid_request"},
		{"unknown field", "/v1/tickets/1/purchase", `{"buyerId":"a","sEcReT-fIeLd":2}`, nil, 400, "invalid_request"},
		{"duplicate keys", "/v1/tickets/1/purchase", `{"buyerId":"a","buyerId":"b"}`, nil, 400, "invalid_request"},
		{"field name in another case", "/v1/tickets/1/purchase", `{"BUYERID":"a"}`, nil, 400, "invalid_request"},
		{"buyer not a string", "/v1/tickets/1/purchase", `{"buyerId":42}`, nil, 400, "invalid_request"},
		{"empty buyer", "/v1/tickets/1/purchase", `{"buyerId":""}`, nil, 400, "invalid_request"},
		{"missing buyer", "/v1/tickets/1/purchase", `{}`, nil, 400, "invalid_request"},
		{"buyer too long", "/v1/tickets/1/purchase", `{"buyerId":"` + long + `"}`, nil, 400, "invalid_request"},
		{"invalid UTF-8", "/v1/tickets/1/purchase", "{\"buyerId\":\"al\xffce\"}", nil, 400, "invalid_request"},
		{"lone surrogate escape", "/v1/tickets/1/purchase", `{"buyerId":"al\ud800ce"}`, nil, 400, "invalid_request"},
		{"zero-width space", "/v1/tickets/1/purchase", `{"buyerId":"alice\u200b"}`, nil, 400, "invalid_request"},
		{"leading white space", "/v1/tickets/1/purchase", `{"buyerId":" alice"}`, nil, 400, "invalid_request"},
		{"control character", "/v1/tickets/1/purchase", `{"buyerId":"a\u0007"}`, nil, 400, "invalid_request"},
		// Issue 17, defect 9: ids that look like "alice" but are not.
		{"combining grapheme joiner (Default_Ignorable, Mn)", "/v1/tickets/1/purchase", `{"buyerId":"alice\u034f"}`, nil, 400, "invalid_request"},
		{"variation selector 16", "/v1/tickets/1/purchase", `{"buyerId":"alice\ufe0f"}`, nil, 400, "invalid_request"},
		{"Hangul filler (Default_Ignorable, Lo)", "/v1/tickets/1/purchase", `{"buyerId":"alice\u3164"}`, nil, 400, "invalid_request"},
		{"braille pattern blank (So)", "/v1/tickets/1/purchase", `{"buyerId":"alice\u2800"}`, nil, 400, "invalid_request"},
		{"inner no-break space", "/v1/tickets/1/purchase", `{"buyerId":"ali\u00a0ce"}`, nil, 400, "invalid_request"},
		{"inner ideographic space", "/v1/tickets/1/purchase", `{"buyerId":"ali\u3000ce"}`, nil, 400, "invalid_request"},
		{"trailing data", "/v1/tickets/1/purchase", `{"buyerId":"a"} {}`, nil, 400, "invalid_request"},
		{"body too large", "/v1/purchase", `{"buyerId":"` + strings.Repeat("x", 2*MaxBodyBytes) + `"}`, nil, 400, "invalid_request"},
		{"key too long", "/v1/tickets/1/purchase", `{"buyerId":"a"}`, map[string]string{idemKeyHeader: strings.Repeat("k", MaxIdemKeyLen+1)}, 400, "invalid_request"},
		{"key with non-ASCII", "/v1/tickets/1/purchase", `{"buyerId":"a"}`, map[string]string{idemKeyHeader: "kéy"}, 400, "invalid_request"},
		{"key with a control character", "/v1/tickets/1/purchase", `{"buyerId":"a"}`, map[string]string{idemKeyHeader: "k\x01"}, 400, "invalid_request"},
		{"ticket zero", "/v1/tickets/0/purchase", `{"buyerId":"a"}`, nil, 404, "ticket_not_found"},
		{"ticket with leading zeros", "/v1/tickets/007/purchase", `{"buyerId":"a"}`, nil, 404, "ticket_not_found"},
		{"ticket with a sign", "/v1/tickets/+8/purchase", `{"buyerId":"a"}`, nil, 404, "ticket_not_found"},
		{"ticket not a number", "/v1/tickets/abc/purchase", `{"buyerId":"a"}`, nil, 404, "ticket_not_found"},
		{"ticket past int64", "/v1/tickets/99999999999999999999/purchase", `{"buyerId":"a"}`, nil, 404, "ticket_not_found"},
		{"doubled slash", "/v1//tickets/1/purchase", `{"buyerId":"a"}`, nil, 404, "not_found"},
		{"dot segment", "/v1/tickets/./1/purchase", `{"buyerId":"a"}`, nil, 404, "not_found"},
		{"trailing slash", "/v1/purchase/", `{"buyerId":"a"}`, nil, 404, "not_found"},
		{"metrics on the API listener", "/metrics", ``, nil, 404, "not_found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture()
			rec := f.do(http.MethodPost, c.path, c.body, c.header)
			p, resp := readProblem(t, rec)
			if resp.StatusCode != c.status || p.Code != c.code {
				t.Fatalf("want %d %s, got %d %+v", c.status, c.code, resp.StatusCode, p)
			}
			if f.checkout.calls != 0 {
				t.Fatal("refused input must not reach checkout")
			}
			if strings.Contains(p.Detail, "sEcReT") || (c.header != nil && strings.Contains(p.Detail, c.header[idemKeyHeader])) {
				t.Fatalf("the detail quotes the input: %q", p.Detail)
			}
			if resp.Header.Get(idemKeyHeader) != "" || resp.Header.Get("Location") != "" {
				t.Fatalf("a refused request echoes its key or redirects: %v", resp.Header)
			}
		})
	}
	t.Run("two Idempotency-Keys", func(t *testing.T) {
		f := newFixture()
		req := map[string][]string{idemKeyHeader: {"a", "b"}}
		rec := f.doHeader(http.MethodPost, "/v1/purchase", `{"buyerId":"a"}`, req)
		if p, resp := readProblem(t, rec); resp.StatusCode != 400 || p.Code != "invalid_request" {
			t.Fatalf("got %d %+v", resp.StatusCode, p)
		}
	})
}

func (f *fixture) doHeader(method, path, body string, h http.Header) interface{ Result() *http.Response } {
	req, _ := http.NewRequest(method, path, strings.NewReader(body))
	req.Header = h
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec
}

// A valid purchase reaches checkout with its seat, buyer (NFC) and key; the
// key is echoed; a replay is marked; the pass check's refusal is handed to
// checkout (which alone decides whether a keyed retry learns its order).
func TestPurchase_ReachesCheckout(t *testing.T) {
	f := newFixture()
	rec := f.do(http.MethodPost, "/v1/tickets/7/purchase", `{"buyerId":"re\u0301my"}`, map[string]string{idemKeyHeader: "replay"})
	resp := rec.Result()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		t.Fatalf("got %d", resp.StatusCode)
	}
	if got := f.checkout.purchase; got.TicketID != 7 || got.BuyerID != "r\u00e9my" || got.IdempotencyKey != "replay" || got.Refusal != nil {
		t.Fatalf("checkout got %+v", got)
	}
	if resp.Header.Get(idemKeyHeader) != "replay" || resp.Header.Get(replayedHeader) != "true" {
		t.Fatalf("headers %v", resp.Header)
	}
	f.queue.passErr = sale.ErrPassInvalid
	p, _ := readProblem(t, f.do(http.MethodPost, "/v1/purchase", `{"buyerId":"bob"}`, map[string]string{idemKeyHeader: "k"}))
	if p.Code != "pass_invalid" || !errors.Is(f.checkout.purchase.Refusal, sale.ErrPassInvalid) || f.checkout.purchase.TicketID != 0 {
		t.Fatalf("got %+v, checkout got %+v", p, f.checkout.purchase)
	}
}

// The purchase route taken ahead of the mux answers as the mux's own: an
// escaped path goes the mux's way, and a method other than POST is 405.
func TestPurchase_RouteAheadOfTheMux(t *testing.T) {
	for _, c := range []struct {
		method, path string
		status       int
		seat         int64
	}{
		{http.MethodPost, "/v1/tickets/7/purchase", http.StatusCreated, 7},
		{http.MethodPost, "/v1/tickets/%37/purchase", http.StatusCreated, 7},
		{http.MethodPost, "/v1/tickets/7%2Fpurchase", http.StatusMethodNotAllowed, 0}, // GET /v1/tickets/{id}
		{http.MethodGet, "/v1/tickets/7/purchase", http.StatusMethodNotAllowed, 0},
		{http.MethodPost, "/v1/tickets/7/purchase/", http.StatusNotFound, 0},
	} {
		f := newFixture()
		resp := f.do(c.method, c.path, `{"buyerId":"alice"}`, nil).Result()
		if resp.StatusCode != c.status || f.checkout.purchase.TicketID != c.seat {
			t.Errorf("%s %s: got %d, seat %d; want %d, seat %d", c.method, c.path, resp.StatusCode, f.checkout.purchase.TicketID, c.status, c.seat)
		}
	}
}

// The read endpoints, the probes and the page's routes.
func TestReadsProbesAndPage(t *testing.T) {
	f := newFixture()
	for _, c := range []struct {
		path, want string
		status     int
	}{
		{"/v1/tickets/3", `"status":"available"`, 200},
		{"/v1/availability", `"available":9`, 200},
		{"/v1/orders/" + fakeOrder.ID.String(), `"ticketId":1`, 200},
		{"/v1/orders/not-a-uuid", `"code":"order_not_found"`, 404},
		{"/v1/holds/" + fakeHold.ID.String(), `"ticketId":2`, 200},
		{"/v1/holds/not-a-uuid", `"code":"hold_not_found"`, 404},
		{"/v1/sale", `"displayName":"Show"`, 200},
		{"/healthz", "ok", 200},
		{"/readyz", "ok", 200},
		{"/", "<!doctype html>", 200},
		{"/assets/nothing.js", `"code":"not_found"`, 404},
		{"/v1/events", "event: test", 200},
	} {
		rec := f.do(http.MethodGet, c.path, "", nil)
		if rec.Code != c.status || !strings.Contains(strings.ToLower(rec.Body.String()), strings.ToLower(c.want)) {
			t.Errorf("GET %s: %d %s, want %d with %s", c.path, rec.Code, rec.Body, c.status, c.want)
		}
	}
	if rec := f.do(http.MethodDelete, "/v1/tickets/3", "", nil); rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("DELETE of a ticket: %d %v", rec.Code, rec.Header())
	}
	f.warming = true
	if rec := f.do(http.MethodGet, "/readyz", "", nil); rec.Code != 503 {
		t.Errorf("/readyz while warming: %d", rec.Code)
	}
	f.warming = false
	f.draining = true
	if rec := f.do(http.MethodGet, "/readyz", "", nil); rec.Code != 503 {
		t.Errorf("/readyz while draining: %d", rec.Code)
	}
	f.feed.err = errors.New("closed")
	if p, resp := readProblem(t, f.do(http.MethodGet, "/v1/events", "", nil)); resp.StatusCode != 503 || p.Code != "unavailable" {
		t.Errorf("/v1/events on a closed feed: %d %+v", resp.StatusCode, p)
	}
	f.feed.err = seatfeed.ErrFull
	if p, resp := readProblem(t, f.do(http.MethodGet, "/v1/events", "", nil)); resp.StatusCode != 503 || p.Code != "unavailable" || resp.Header.Get("Retry-After") != "10" {
		t.Errorf("/v1/events at the pod's cap: %d %+v %v", resp.StatusCode, p, resp.Header)
	}
}

// The hold API's decoding: seat from the path, a pass check before any
// work, confirm's strict body, release's 204.
func TestHolds_Handlers(t *testing.T) {
	f := newFixture()
	if rec := f.do(http.MethodPost, "/v1/tickets/2/hold", `{"buyerId":"alice"}`, nil); rec.Code != 201 || f.checkout.hold.TicketID != 2 || f.checkout.hold.BuyerID != "alice" {
		t.Fatalf("hold: %d %s, checkout got %+v", rec.Code, rec.Body, f.checkout.hold)
	}
	confirm := "/v1/holds/" + fakeHold.ID.String() + "/confirm"
	for _, body := range []string{`{"buyerId":"alice"}`, `{"buyerId":"alice","paymentRef":""}`, `{"buyerId":"alice","paymentRef":" pi_1"}`,
		`{"buyerId":"alice","paymentRef":"pi_\u00e9"}`, `{"buyerId":"alice","paymentRef":"` + strings.Repeat("p", MaxPaymentRefLen+1) + `"}`} {
		if p, resp := readProblem(t, f.do(http.MethodPost, confirm, body, nil)); resp.StatusCode != 400 || p.Code != "invalid_request" {
			t.Errorf("confirm %s: %d %+v", body, resp.StatusCode, p)
		}
	}
	if rec := f.do(http.MethodPost, confirm, `{"paymentRef":"pi_1","buyerId":"alice"}`, nil); rec.Code != 201 || f.checkout.confirm != [2]string{"alice", "pi_1"} {
		t.Fatalf("confirm: %d %s, checkout got %v", rec.Code, rec.Body, f.checkout.confirm)
	}
	if rec := f.do(http.MethodDelete, "/v1/holds/"+fakeHold.ID.String(), "", nil); rec.Code != 204 || rec.Body.Len() != 0 {
		t.Fatalf("release: %d %q", rec.Code, rec.Body)
	}
	if rec := f.do(http.MethodPut, "/v1/holds/"+fakeHold.ID.String(), "", nil); rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD, DELETE" {
		t.Fatalf("PUT of a hold: %d %v", rec.Code, rec.Header())
	}
	f.queue.passErr = sale.ErrPassRequired
	if p, resp := readProblem(t, f.do(http.MethodPost, "/v1/holds", `{"buyerId":"bob"}`, nil)); resp.StatusCode != 401 || p.Code != "pass_required" ||
		!errors.Is(f.checkout.hold.Refusal, sale.ErrPassRequired) {
		t.Fatalf("a hold without a pass: %d %+v, checkout got %+v", resp.StatusCode, p, f.checkout.hold)
	}
}

// The waiting room's answers: 202 while waiting, 200 once admitted, the
// queue id, Retry-After; problems from the room pass through.
func TestQueue_Handlers(t *testing.T) {
	f := newFixture()
	if p, resp := readProblem(t, f.do(http.MethodPost, "/v1/queue", `{"buyerId":"alice"}`, nil)); resp.StatusCode != 404 || p.Code != "queue_not_found" {
		t.Fatalf("join with the room off: %d %+v", resp.StatusCode, p)
	}
	f.queue.on = true
	pos, wait := int64(3), int64(2)
	f.queue.place = waitingroom.Place{State: waitingroom.StateWaiting, Position: &pos, Wait: &wait, Retry: 4}
	rec := f.do(http.MethodPost, "/v1/queue", `{"buyerId":"alice"}`, nil)
	var b QueueBody
	_ = json.Unmarshal(rec.Body.Bytes(), &b)
	if rec.Code != 202 || b.QueueID != "qid-alice" || *b.Position != 3 || rec.Header().Get("Retry-After") != "4" {
		t.Fatalf("join: %d %s %v", rec.Code, rec.Body, rec.Header())
	}
	if p, resp := readProblem(t, f.do(http.MethodPost, "/v1/queue", `{"buyerId":""}`, nil)); resp.StatusCode != 400 || p.Code != "invalid_request" {
		t.Fatalf("join with a bad body: %d %+v", resp.StatusCode, p)
	}
	exp := time.Now().Add(time.Minute)
	f.queue.place = waitingroom.Place{State: waitingroom.StateAdmitted, Pass: "p", Expires: exp, Retry: 1}
	if rec := f.do(http.MethodGet, "/v1/queue/abc", "", nil); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"pass":"p"`) {
		t.Fatalf("poll: %d %s", rec.Code, rec.Body)
	}
	f.queue.err = &sale.RetryAfterError{Seconds: 5, Err: sale.ErrSoldOut}
	if p, resp := readProblem(t, f.do(http.MethodGet, "/v1/queue/abc", "", nil)); resp.StatusCode != 409 || p.Code != "sold_out" || resp.Header.Get("Retry-After") != "5" {
		t.Fatalf("poll of a sold-out room: %d %+v %v", resp.StatusCode, p, resp.Header)
	}
	if rec := f.do(http.MethodGet, "/v1/queue", "", nil); rec.Code != 405 {
		t.Fatalf("GET /v1/queue: %d", rec.Code)
	}
}

// A buyer id with an inner U+0020 and non-Latin letters and marks is fine.
func TestPurchase_VisibleBuyerIDs_Accepted(t *testing.T) {
	for _, id := range []string{"Anna Maria", "Renée", "山田太郎", "محمد", "e\u0301", "x😀"} {
		f := newFixture()
		if rec := f.do(http.MethodPost, "/v1/purchase", `{"buyerId":"`+id+`"}`, nil); rec.Code != http.StatusCreated {
			t.Errorf("%q: %d %s", id, rec.Code, rec.Body)
		}
	}
}

// The front door's per-client caps answer 429 too_many_requests with
// Retry-After; a refused stream never reaches the feed, an open one is
// released when it ends.
func TestFrontDoor_TooManyRequests(t *testing.T) {
	f := newFixture()
	f.queue.on = true
	f.door.joinErr = &sale.RetryAfterError{Seconds: 7, Err: sale.ErrTooManyRequests}
	p, resp := readProblem(t, f.do(http.MethodPost, "/v1/queue", `{"buyerId":"alice"}`, nil))
	if resp.StatusCode != 429 || p.Code != "too_many_requests" || resp.Header.Get("Retry-After") != "7" || f.queue.joined != "" {
		t.Fatalf("join over the client's rate: %d %+v %v (joined %q)", resp.StatusCode, p, resp.Header, f.queue.joined)
	}
	f.door.streamErr = &sale.RetryAfterError{Seconds: 10, Err: sale.ErrTooManyRequests}
	p, resp = readProblem(t, f.do(http.MethodGet, "/v1/events", "", nil))
	if resp.StatusCode != 429 || p.Code != "too_many_requests" || resp.Header.Get("Retry-After") != "10" {
		t.Fatalf("stream over the client's cap: %d %+v %v", resp.StatusCode, p, resp.Header)
	}
	f.door.streamErr = nil
	if rec := f.do(http.MethodGet, "/v1/events", "", nil); rec.Code != 200 || f.door.open != 0 {
		t.Fatalf("a stream: %d, %d still counted after it ended", rec.Code, f.door.open)
	}
}

// DELETE /v1/queue/{queueId}: 204 with no body; the room's problems pass
// through; other methods are told GET, HEAD, DELETE.
func TestQueue_Leave_Handler(t *testing.T) {
	f := newFixture()
	if rec := f.do(http.MethodDelete, "/v1/queue/qid-alice", "", nil); rec.Code != 204 || rec.Body.Len() != 0 || f.queue.left != "qid-alice" {
		t.Fatalf("leave: %d %q, room got %q", rec.Code, rec.Body, f.queue.left)
	}
	f.queue.err = sale.ErrQueueNotFound
	if p, resp := readProblem(t, f.do(http.MethodDelete, "/v1/queue/nope", "", nil)); resp.StatusCode != 404 || p.Code != "queue_not_found" {
		t.Fatalf("leave of an unknown id: %d %+v", resp.StatusCode, p)
	}
	if rec := f.do(http.MethodPut, "/v1/queue/qid-alice", "", nil); rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD, DELETE" {
		t.Fatalf("PUT of a queue id: %d %v", rec.Code, rec.Header())
	}
}

// A join refused for its proof of work: 428 with the fresh challenge and
// its difficulty in headers, never cached; the proof header reaches the
// room; the room is not joined.
func TestQueue_JoinAsksAProofOfWork(t *testing.T) {
	f := newFixture()
	f.queue.on = true
	f.queue.proofErr = &waitingroom.ChallengeError{Challenge: "chal", Difficulty: 16, Err: sale.ErrProofRequired}
	p, resp := readProblem(t, f.do(http.MethodPost, "/v1/queue", `{"buyerId":"alice"}`, map[string]string{"Flux-Order-Proof": "chal.42"}))
	if resp.StatusCode != 428 || p.Code != "proof_required" || resp.Header.Get("Flux-Order-Challenge") != "chal" ||
		resp.Header.Get("Flux-Order-Difficulty") != "16" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("join without a proof: %d %+v %v", resp.StatusCode, p, resp.Header)
	}
	if f.queue.proof != "chal.42" || f.queue.joined != "" {
		t.Fatalf("the room got proof %q and joined %q", f.queue.proof, f.queue.joined)
	}
	f.queue.proofErr = &waitingroom.ChallengeError{Challenge: "chal2", Difficulty: 16, Err: sale.ErrProofInvalid}
	if p, resp := readProblem(t, f.do(http.MethodPost, "/v1/queue", `{"buyerId":"alice"}`, nil)); resp.StatusCode != 428 || p.Code != "proof_invalid" || resp.Header.Get("Flux-Order-Challenge") != "chal2" {
		t.Fatalf("join with a bad proof: %d %+v %v", resp.StatusCode, p, resp.Header)
	}
}
