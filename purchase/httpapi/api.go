// Package httpapi is the purchase pod's HTTP API: the routes, the strict
// request decoder, the problem table (RFC 9457 bodies with stable codes)
// and the handlers. It reaches the pod's parts only through the small
// interfaces of deps.go, so its tests run against fakes, with no server.
package httpapi

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/sale"
)

const (
	// MaxBodyBytes bounds a request body: a purchase body is one short field.
	MaxBodyBytes = 1 << 10
	// MaxIdemKeyLen bounds an Idempotency-Key.
	MaxIdemKeyLen  = 255
	idemKeyHeader  = "Idempotency-Key"
	replayedHeader = "Idempotent-Replayed"
)

// API is the purchase pod's HTTP API over the pod's parts.
type API struct {
	checkout Checkout
	queue    Queue
	feed     Feed
	identity Identity
	door     Door
	facts    func() sale.Facts
	draining func() bool
	warming  func() bool
	metrics  *metrics
	log      *slog.Logger
	// adminToken is the SHA-256 of the admin API's token (nil: the admin
	// API is off).
	adminToken []byte
	// lastUnavailableLog rate-limits the log line of 503 answers.
	lastUnavailableLog atomic.Int64
}

// Deps are the parts an API answers from.
type Deps struct {
	Checkout Checkout
	Queue    Queue
	Feed     Feed
	// Identity, when set and on, makes every purchase, hold, confirm,
	// join and order lookup need the buyer's identity token (identity.go).
	Identity Identity
	// Door caps joins and streams per client (nil: no per-client caps).
	Door Door
	// Facts are the sale's public facts now (GET /v1/sale).
	Facts func() sale.Facts
	// Draining says the pod is shutting down: /readyz fails.
	Draining func() bool
	// Warming says the pod's start is not done (the waiting room's first
	// view): /readyz fails until it is (nil: never warming).
	Warming func() bool
	// AdminToken is the bearer token of the admin API (AdminHandler);
	// empty turns the admin API off (it answers 404 admin_disabled).
	AdminToken string
	// Registerer takes the API's series (answers by outcome).
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// New returns the API over d.
func New(d Deps) *API {
	if d.Door == nil {
		d.Door = openDoor{}
	}
	a := &API{door: d.Door, checkout: d.Checkout, queue: d.Queue, feed: d.Feed, identity: d.Identity, facts: d.Facts, draining: d.Draining,
		warming: d.Warming,
		metrics: newMetrics(d.Registerer), log: d.Log}
	if d.AdminToken != "" {
		h := sha256.Sum256([]byte(d.AdminToken))
		a.adminToken = h[:]
	}
	return a
}

// Handler returns the purchase API: /v1/*, the probes and the sale page,
// nothing else (/metrics is served only on the pod's metrics listener).
// Unknown paths, and paths that are not in their clean form
// ("/v1//tickets/1"), answer a 404 problem: no redirects.
//
// /readyz fails only while the pod starts (until it is warm: the waiting
// room's first view) and while it drains. An outage of Redis or Postgres
// is shared by every pod of the sale: taking them all out of the Service
// would make the Ingress answer a bare 404, while a ready pod answers each
// purchase with 503 unavailable and Retry-After, which buyers can act on.
// So once warm, a pod stays ready through an outage.
func (s *API) Handler() http.Handler {
	mux := http.NewServeMux()
	buyTicket := purchaseHandler(s.handlePurchaseTicket)
	mux.HandleFunc("/v1/tickets/{id}/purchase", s.post(buyTicket))
	mux.HandleFunc("/v1/purchase", s.post(s.handlePurchaseAny))
	mux.HandleFunc("/v1/tickets/{id}", get(s.handleTicket))
	mux.HandleFunc("/v1/availability", get(s.handleAvailability))
	mux.HandleFunc("/v1/orders/{id}", get(s.handleOrder))
	s.pageRoutes(mux)
	s.queueRoutes(mux)
	s.holdRoutes(mux)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.draining() || (s.warming != nil && s.warming()) {
			writeProblem(w, sale.ErrUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { writeProblem(w, errNoSuchEndpoint) })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A hot-seat storm is this one route: it skips the mux's pattern
		// match, a tenth of a refusal's own cost.
		if seat, ok := ticketPurchasePath(r.URL); ok {
			s.purchase(w, r, seat, buyTicket)
			return
		}
		// ServeMux would answer an unclean path with a redirect to its
		// clean form; a purchase API has one spelling per resource.
		if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p {
			writeProblem(w, errNoSuchEndpoint)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// logUnavailable logs why purchases fail with 503, at most once a second:
// an outage answers thousands of them.
func (s *API) logUnavailable(err error) {
	now := time.Now().UnixNano()
	last := s.lastUnavailableLog.Load()
	if now-last >= int64(time.Second) && s.lastUnavailableLog.CompareAndSwap(last, now) {
		s.log.Warn("purchases answered 503 unavailable", "err", err)
	}
}

func get(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeProblem(w, errMethodNotAllowed)
			return
		}
		h(w, r)
	}
}

// ticketPurchasePath matches /v1/tickets/{id}/purchase ahead of the mux,
// for a canonical seat id in a path with nothing escaped: such a path is
// clean, and the mux would route it to the same handler with the same id.
// Anything else takes the mux's way.
func ticketPurchasePath(u *url.URL) (string, bool) {
	if u.RawPath != "" {
		return "", false
	}
	rest, ok := strings.CutPrefix(u.Path, "/v1/tickets/")
	if !ok {
		return "", false
	}
	seat, ok := strings.CutSuffix(rest, "/purchase")
	if !ok || !canonicalTicketID(seat) {
		return "", false
	}
	return seat, true
}

// purchaseHandler decides the Request from the HTTP request, the seat id in
// its path ("" for any seat), its body and its (already validated)
// idempotency key.
type purchaseHandler func(r *http.Request, seat string, body []byte, key string) (checkout.Request, buyer, error)

// post serves a purchase route: the seat is the path's {id}.
func (s *API) post(decide purchaseHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { s.purchase(w, r, r.PathValue("id"), decide) }
}

// purchase runs a purchase: decode, buy, answer, count.
func (s *API) purchase(w http.ResponseWriter, r *http.Request, seat string, decide purchaseHandler) {
	start := time.Now()
	o, replayed, err := s.servePurchase(w, r, seat, decide)
	var body any // an order in an interface is an allocation: refusals skip it
	if err == nil {
		body = o
	}
	outcome := s.answer(w, http.StatusCreated, body, replayed, err, "created")
	s.metrics.observe(outcome, time.Since(start).Seconds())
}

// answer writes a POST's answer: the problem for err, or status with body
// (no body when nil), marked Idempotent-Replayed when replayed. It returns
// the outcome the metrics count: the problem's code, "replayed", or ok.
func (s *API) answer(w http.ResponseWriter, status int, body any, replayed bool, err error, ok string) string {
	switch {
	case err != nil:
		p := writeProblem(w, err)
		if p.status == http.StatusServiceUnavailable && errors.Is(err, sale.ErrUnavailable) {
			s.logUnavailable(err)
		}
		return p.code
	case replayed:
		w.Header().Set(replayedHeader, "true")
		writeJSON(w, status, body)
		return "replayed"
	case body == nil:
		w.WriteHeader(status)
	default:
		writeJSON(w, status, body)
	}
	return ok
}

func (s *API) servePurchase(w http.ResponseWriter, r *http.Request, seat string, decide purchaseHandler) (checkout.Order, bool, error) {
	key, body, err := readPost(w, r)
	if err != nil {
		return checkout.Order{}, false, err
	}
	req, b, err := decide(r, seat, body, key)
	if err != nil {
		return checkout.Order{}, false, err
	}
	// A refused pass buys nothing new, but a keyed retry still learns the
	// order it already bought: checkout decides both.
	req.Refusal = s.checkPass(r, b)
	return s.checkout.Purchase(r.Context(), req)
}

// readPost refuses methods other than POST, validates the Idempotency-Key
// and echoes it (checked before it is echoed: never reflect what we
// refuse), and reads the small body.
func readPost(w http.ResponseWriter, r *http.Request) (key string, body []byte, err error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return "", nil, errMethodNotAllowed
	}
	if key, err = idempotencyKey(r.Header); err != nil {
		return "", nil, err
	}
	if key != "" {
		w.Header()[idemKeyHeader] = []string{key}
	}
	body, err = readBody(w, r)
	return key, body, err
}

// readBody reads a small request body (MaxBodyBytes). A declared length
// within the bound is read into one buffer of that size; a body of unknown
// length (chunked) or over the bound goes through MaxBytesReader, which
// also closes the connection after an oversized one.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= MaxBodyBytes {
		body := make([]byte, n)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, errUnreadableBody()
		}
		return body, nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		return nil, errUnreadableBody()
	}
	return body, nil
}

func errUnreadableBody() error {
	return fmt.Errorf("%w: body larger than %d bytes or unreadable", sale.ErrInvalidRequest, MaxBodyBytes)
}

// idempotencyKey returns the request's Idempotency-Key ("" when absent),
// refusing more than one and anything checkIdemKey refuses.
func idempotencyKey(h http.Header) (string, error) {
	vs := h[idemKeyHeader]
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", fmt.Errorf("%w: more than one %s", sale.ErrInvalidRequest, idemKeyHeader)
	}
	if vs[0] == "" {
		return "", fmt.Errorf("%w: %s must not be empty", sale.ErrInvalidRequest, idemKeyHeader)
	}
	return vs[0], checkIdemKey(vs[0])
}

// handlePurchaseTicket reads the seat from the path; checkout checks its
// range (against the live inventory).
func (s *API) handlePurchaseTicket(r *http.Request, seat string, body []byte, key string) (checkout.Request, buyer, error) {
	id, ok := parseTicketID(seat)
	if !ok {
		return checkout.Request{}, buyer{}, sale.ErrTicketNotFound
	}
	b, err := s.buyerOf(r, body)
	return checkout.Request{TicketID: id, BuyerID: b.id, IdempotencyKey: key}, b, err
}

func (s *API) handlePurchaseAny(r *http.Request, _ string, body []byte, key string) (checkout.Request, buyer, error) {
	b, err := s.buyerOf(r, body)
	return checkout.Request{BuyerID: b.id, IdempotencyKey: key}, b, err
}

// parseTicketID accepts only the canonical spelling of a positive decimal
// (no sign, no leading zero): /v1/tickets/007 is not seat 7.
func parseTicketID(v string) (int64, bool) {
	if !canonicalTicketID(v) {
		return 0, false
	}
	id, err := strconv.ParseInt(v, 10, 64)
	return id, err == nil
}

// canonicalTicketID says whether v is spelled as parseTicketID accepts (it
// may still overflow an int64).
func canonicalTicketID(v string) bool {
	if v == "" || len(v) > 19 || v[0] < '1' || v[0] > '9' {
		return false
	}
	for i := 1; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

// TicketBody is GET /v1/tickets/{id}.
type TicketBody struct {
	TicketID int64                 `json:"ticketId"`
	Status   checkout.TicketStatus `json:"status"`
}

func (s *API) handleTicket(w http.ResponseWriter, r *http.Request) {
	id, ok := parseTicketID(r.PathValue("id"))
	if !ok {
		writeProblem(w, sale.ErrTicketNotFound)
		return
	}
	st, err := s.checkout.Ticket(r.Context(), id)
	if err != nil {
		writeProblem(w, err)
		return
	}
	writeJSON(w, http.StatusOK, TicketBody{TicketID: id, Status: st})
}

func (s *API) handleAvailability(w http.ResponseWriter, r *http.Request) {
	a, err := s.checkout.Availability(r.Context())
	if err != nil {
		writeProblem(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *API) handleOrder(w http.ResponseWriter, r *http.Request) {
	if err := s.authenticate(r); err != nil {
		writeProblem(w, err)
		return
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		writeProblem(w, sale.ErrOrderNotFound)
		return
	}
	o, err := s.checkout.Order(r.Context(), id)
	var cancelled *sale.CancelledOrderError
	switch {
	case err == nil:
		err = s.owner(r, o.BuyerID, sale.ErrOrderNotFound)
	case errors.As(err, &cancelled):
		// Only its buyer learns that the order was cancelled.
		if oerr := s.owner(r, cancelled.BuyerID, sale.ErrOrderNotFound); oerr != nil {
			err = oerr
		}
	}
	if err != nil {
		writeProblem(w, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
