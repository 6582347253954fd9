package delivery

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// Tolerance is how far a delivery's webhook-timestamp may be from the
// receiver's clock (Standard Webhooks: 5 minutes), against replays.
const Tolerance = 5 * time.Minute

// Receiver is the reference receiver (flux-order receive, the tests): it
// verifies each delivery's signature and timestamp, keeps the first body
// of each webhook-id, and counts duplicates and bad signatures. Bad
// deliveries get a problem+json 401 (retried by the sender: a receiver
// whose secret is behind the rotation catches up).
type Receiver struct {
	// Secrets verify a delivery when any one of them does.
	Secrets []string
	// Answer, when set, may fail an attempt of a verified delivery: it
	// returns the status to answer (2xx keeps the event), given the
	// delivery's id and how many attempts of it came before.
	Answer func(id string, attempt int) int
	// OnEvent, when set, is told of every verified delivery that is kept
	// (first time answered 2xx).
	OnEvent func(id string, body []byte)

	mu            sync.Mutex
	events        map[string][]byte
	attempts      map[string]int
	order         []string
	duplicates    int
	badSignatures int
	refused       int
	// What a benchmark reads (Report): when the first and the last event
	// were kept, and each order.confirmed's lag, from its timestamp (the
	// order's purchasedAt, taken in its confirming transaction) to the
	// 2xx that kept it.
	orders              int
	firstKept, lastKept time.Time
	lags                []time.Duration
}

// ServeHTTP receives one delivery.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		problem(w, http.StatusMethodNotAllowed, "method_not_allowed", "deliveries are POSTs")
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		problem(w, http.StatusBadRequest, "unreadable", "the body could not be read")
		return
	}
	id := req.Header.Get(HeaderID)
	ts, err := strconv.ParseInt(req.Header.Get(HeaderTimestamp), 10, 64)
	verified := false
	if err == nil && id != "" {
		if d := time.Since(time.Unix(ts, 0)); d < Tolerance && d > -Tolerance {
			for _, s := range r.Secrets {
				if Verify(s, id, ts, body, req.Header.Get(HeaderSignature)) == nil {
					verified = true
					break
				}
			}
		}
	}
	r.mu.Lock()
	if !verified {
		r.badSignatures++
		r.mu.Unlock()
		problem(w, http.StatusUnauthorized, "bad_signature", "no webhook-signature verifies under this receiver's secrets, or webhook-timestamp is not within 5 minutes")
		return
	}
	n := r.attempts[id]
	r.attempts[id] = n + 1
	r.mu.Unlock()
	status := http.StatusNoContent
	if r.Answer != nil {
		status = r.Answer(id, n)
	}
	if status < 200 || status > 299 {
		r.mu.Lock()
		r.refused++
		r.mu.Unlock()
		problem(w, status, "refused", "the receiver refused this attempt")
		return
	}
	var head struct {
		Type      string    `json:"type"`
		Timestamp time.Time `json:"timestamp"`
	}
	_ = json.Unmarshal(body, &head) // verified: ours; a body without them has no lag
	r.mu.Lock()
	_, seen := r.events[id]
	if seen {
		r.duplicates++
	} else {
		now := time.Now()
		r.events[id] = body
		r.order = append(r.order, id)
		if r.firstKept.IsZero() {
			r.firstKept = now
		}
		r.lastKept = now
		if head.Type == string(salesv1alpha1.EventOrderConfirmed) {
			r.orders++
			r.lags = append(r.lags, now.Sub(head.Timestamp))
		}
	}
	r.mu.Unlock()
	if !seen && r.OnEvent != nil {
		r.OnEvent(id, body)
	}
	w.WriteHeader(status)
}

func problem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": "about:blank", "title": http.StatusText(status), "status": status, "code": code, "detail": detail,
	})
}

// NewReceiver is a receiver of deliveries signed with any of secrets.
func NewReceiver(secrets ...string) *Receiver {
	return &Receiver{Secrets: secrets, events: map[string][]byte{}, attempts: map[string]int{}}
}

// Stats are what a receiver has seen.
type Stats struct {
	Events        int `json:"events"`     // distinct webhook-ids kept
	Duplicates    int `json:"duplicates"` // deliveries of an id already kept
	BadSignatures int `json:"badSignatures"`
}

func (s Stats) String() string {
	return fmt.Sprintf("%d events, %d duplicates, %d bad signatures", s.Events, s.Duplicates, s.BadSignatures)
}

// Stats counts what the receiver has seen so far.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Events: len(r.events), Duplicates: r.duplicates, BadSignatures: r.badSignatures}
}

// Events are the kept bodies by webhook-id.
func (r *Receiver) Events() map[string][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]byte, len(r.events))
	for k, v := range r.events {
		out[k] = v
	}
	return out
}

// Attempts is how many verified attempts of id arrived.
func (r *Receiver) Attempts(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts[id]
}

// Report is what a receiver measured, for benchmarks (`flux-order receive`
// serves it at GET /stats and prints it when it stops).
type Report struct {
	Stats
	// Orders is how many distinct order.confirmed events were kept.
	Orders int `json:"orders"`
	// Refused counts verified attempts answered non-2xx (Answer).
	Refused int `json:"refused"`
	// FirstKept and LastKept: when the first and the last distinct event
	// were answered 2xx (zero: none yet).
	FirstKept time.Time `json:"firstKept"`
	LastKept  time.Time `json:"lastKept"`
	// Lag of the order.confirmed events kept: from the event's timestamp
	// (the order's purchasedAt) to the receiver's 2xx, in seconds.
	Lag Percentiles `json:"lagSeconds"`
}

// Percentiles of a set of durations, in seconds.
type Percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q int) float64 { return s[min(len(s)-1, len(s)*q/100)].Seconds() }
	return Percentiles{N: len(s), P50: at(50), P90: at(90), P99: at(99), Max: s[len(s)-1].Seconds()}
}

func (r Report) String() string {
	return fmt.Sprintf("%s, %d orders, %d refused, lag p50 %.3fs p99 %.3fs max %.3fs", r.Stats, r.Orders, r.Refused, r.Lag.P50, r.Lag.P99, r.Lag.Max)
}

// Report is what the receiver measured so far.
func (r *Receiver) Report() Report {
	r.mu.Lock()
	lags := slices.Clone(r.lags)
	rep := Report{Stats: Stats{Events: len(r.events), Duplicates: r.duplicates, BadSignatures: r.badSignatures},
		Orders: r.orders, Refused: r.refused, FirstKept: r.firstKept, LastKept: r.lastKept}
	r.mu.Unlock()
	rep.Lag = percentiles(lags)
	return rep
}
