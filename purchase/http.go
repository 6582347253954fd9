package purchase

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const (
	maxBodyBytes   = 1 << 10 // a purchase body is one short field
	maxBuyerIDLen  = 128
	maxIdemKeyLen  = 255
	idemKeyHeader  = "Idempotency-Key"
	replayedHeader = "Idempotent-Replayed"
)

// Handler returns the purchase API.
//
// /readyz fails only while the pod drains. An outage of Redis or Postgres
// is shared by every pod of the sale: taking them all out of the Service
// would make the Ingress answer a bare 404, while a ready pod answers each
// purchase with 503 unavailable and Retry-After, which buyers can act on.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/tickets/{id}/purchase", s.post(s.handlePurchaseTicket))
	mux.HandleFunc("/v1/purchase", s.post(s.handlePurchaseAny))
	mux.HandleFunc("/v1/tickets/{id}", get(s.handleTicket))
	mux.HandleFunc("/v1/availability", get(s.handleAvailability))
	mux.HandleFunc("/v1/orders/{id}", get(s.handleOrder))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.draining.Load() {
			writeProblem(w, fmt.Errorf("%w: shutting down", ErrUnavailable))
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("/metrics", s.MetricsHandler())
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeProblem(w, fmt.Errorf("%w: no such endpoint", ErrInvalidRequest))
	})
	return mux
}

// logUnavailable logs why purchases fail with 503, at most once a second:
// an outage answers thousands of them.
func (s *Service) logUnavailable(err error) {
	now := time.Now().UnixNano()
	last := s.lastUnavailableLog.Load()
	if now-last >= int64(time.Second) && s.lastUnavailableLog.CompareAndSwap(last, now) {
		s.log.Warn("purchases answered 503 unavailable", "err", err)
	}
}

// MetricsHandler serves the Prometheus metrics.
func (s *Service) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})
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

// purchaseHandler decides the Request from the HTTP request.
type purchaseHandler func(r *http.Request, body []byte) (Request, error)

// post runs a purchase: decode, buy, answer, count.
func (s *Service) post(decide purchaseHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if key := r.Header.Get(idemKeyHeader); key != "" {
			w.Header().Set(idemKeyHeader, key)
		}
		o, replayed, err := s.servePurchase(w, r, decide)
		outcome := "created"
		switch {
		case err != nil:
			outcome = problemFor(err).code
			if errors.Is(err, ErrUnavailable) {
				s.logUnavailable(err)
			}
			writeProblem(w, err)
		case replayed:
			outcome = "replayed"
			w.Header().Set(replayedHeader, "true")
			writeJSON(w, http.StatusCreated, o)
		default:
			writeJSON(w, http.StatusCreated, o)
		}
		s.metrics.observe(outcome, time.Since(start).Seconds())
	}
}

func (s *Service) servePurchase(w http.ResponseWriter, r *http.Request, decide purchaseHandler) (Order, bool, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return Order{}, false, errMethodNotAllowed
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return Order{}, false, fmt.Errorf("%w: body larger than %d bytes or unreadable", ErrInvalidRequest, maxBodyBytes)
	}
	req, err := decide(r, body)
	if err != nil {
		return Order{}, false, err
	}
	return s.Purchase(r.Context(), req)
}

func (s *Service) handlePurchaseTicket(r *http.Request, body []byte) (Request, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 || id > s.cfg.Tickets {
		return Request{}, ErrTicketNotFound
	}
	req, err := decodePurchase(body, r.Header.Get(idemKeyHeader))
	req.TicketID = id
	return req, err
}

func (s *Service) handlePurchaseAny(r *http.Request, body []byte) (Request, error) {
	return decodePurchase(body, r.Header.Get(idemKeyHeader))
}

// decodePurchase parses and validates a purchase body and idempotency key.
// It must never panic on any input (see FuzzDecodePurchase).
func decodePurchase(body []byte, idemKey string) (Request, error) {
	var b struct {
		BuyerID *string `json:"buyerId"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return Request{}, fmt.Errorf("%w: body must be a JSON object {\"buyerId\": \"...\"}: %v", ErrInvalidRequest, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Request{}, fmt.Errorf("%w: unexpected data after the JSON object", ErrInvalidRequest)
	}
	if b.BuyerID == nil {
		return Request{}, fmt.Errorf("%w: buyerId is required", ErrInvalidRequest)
	}
	if err := checkText("buyerId", *b.BuyerID, maxBuyerIDLen); err != nil {
		return Request{}, err
	}
	if idemKey != "" {
		if err := checkText(idemKeyHeader, idemKey, maxIdemKeyLen); err != nil {
			return Request{}, err
		}
	}
	return Request{BuyerID: *b.BuyerID, IdempotencyKey: idemKey}, nil
}

// checkText accepts 1..max bytes of valid UTF-8 without control characters.
func checkText(name, v string, max int) error {
	switch {
	case v == "":
		return fmt.Errorf("%w: %s must not be empty", ErrInvalidRequest, name)
	case len(v) > max:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalidRequest, name, max)
	case !utf8.ValidString(v):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidRequest, name)
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s contains a control character", ErrInvalidRequest, name)
		}
	}
	return nil
}

type ticketBody struct {
	TicketID int64        `json:"ticketId"`
	Status   TicketStatus `json:"status"`
}

func (s *Service) handleTicket(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeProblem(w, ErrTicketNotFound)
		return
	}
	st, err := s.Ticket(r.Context(), id)
	if err != nil {
		writeProblem(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ticketBody{TicketID: id, Status: st})
}

func (s *Service) handleAvailability(w http.ResponseWriter, r *http.Request) {
	a, err := s.Availability(r.Context())
	if err != nil {
		writeProblem(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *Service) handleOrder(w http.ResponseWriter, r *http.Request) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		writeProblem(w, ErrOrderNotFound)
		return
	}
	o, err := s.Order(r.Context(), id)
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
