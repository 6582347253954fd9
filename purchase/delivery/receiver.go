package delivery

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
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
		problem(w, status, "refused", "the receiver refused this attempt")
		return
	}
	r.mu.Lock()
	_, seen := r.events[id]
	if seen {
		r.duplicates++
	} else {
		r.events[id] = body
		r.order = append(r.order, id)
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
	Events        int // distinct webhook-ids kept
	Duplicates    int // deliveries of an id already kept
	BadSignatures int
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
