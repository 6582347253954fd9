package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// queueRoutes serves the waiting room: POST /v1/queue joins it, GET
// /v1/queue/{queueId} polls it, DELETE /v1/queue/{queueId} leaves it. All
// answer 404 queue_not_found while the sale has no waiting room.
func (s *API) queueRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/v1/queue", s.handleJoin)
	mux.HandleFunc("/v1/queue/{id}", s.handleQueueID)
}

func (s *API) handleQueueID(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.handlePoll(w, r)
	case http.MethodDelete:
		s.handleLeave(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, DELETE")
		writeProblem(w, errMethodNotAllowed)
	}
}

// handleLeave gives the buyer's place (or pass) up: 204, also when it was
// given up already. With buyer identity only the queue id's buyer may.
func (s *API) handleLeave(w http.ResponseWriter, r *http.Request) {
	var as string
	if s.identityOn() {
		sub, err := s.subject(r)
		if err != nil {
			writeProblem(w, err)
			return
		}
		as = sub
	}
	if err := s.queue.Leave(r.Context(), r.PathValue("id"), as); err != nil {
		count(s.metrics.leaves, s.metrics.leavesVec, problemFor(err).code)
		writeProblem(w, err)
		return
	}
	count(s.metrics.leaves, s.metrics.leavesVec, "left")
	w.WriteHeader(http.StatusNoContent)
}

// QueueBody is the answer of a join or a poll (the wire format).
type QueueBody struct {
	QueueID              string     `json:"queueId,omitempty"`
	State                string     `json:"state"`
	Position             *int64     `json:"position"`
	EstimatedWaitSeconds *int64     `json:"estimatedWaitSeconds"`
	Pass                 string     `json:"pass,omitempty"`
	PassExpiresAt        *time.Time `json:"passExpiresAt,omitempty"`
}

func bodyOf(p waitingroom.Place) QueueBody {
	b := QueueBody{State: p.State, Position: p.Position, EstimatedWaitSeconds: p.Wait, Pass: p.Pass}
	if p.Pass != "" {
		exp := p.Expires.UTC()
		b.PassExpiresAt = &exp
	}
	return b
}

// The proof-of-work headers of a join (waitingroom/pow.go).
const (
	proofHeader      = "Flux-Order-Proof"
	challengeHeader  = "Flux-Order-Challenge"
	difficultyHeader = "Flux-Order-Difficulty"
)

func (s *API) handleJoin(w http.ResponseWriter, r *http.Request) {
	p, id, err := s.serveJoin(w, r)
	if err != nil {
		code := problemFor(err).code
		count(s.metrics.joins, s.metrics.joinsVec, code)
		writeProblem(w, err)
		return
	}
	count(s.metrics.joins, s.metrics.joinsVec, p.State)
	b := bodyOf(p)
	b.QueueID = id
	status := http.StatusAccepted
	if p.State != waitingroom.StateWaiting {
		status = http.StatusOK // admitted (a re-join), or closed
	}
	writeQueueBody(w, status, b, p.Retry)
}

// serveJoin enqueues the body's buyer, or finds their place.
func (s *API) serveJoin(w http.ResponseWriter, r *http.Request) (waitingroom.Place, string, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return waitingroom.Place{}, "", errMethodNotAllowed
	}
	if !s.queue.On() {
		return waitingroom.Place{}, "", sale.ErrQueueNotFound
	}
	if err := s.door.Join(r); err != nil {
		return waitingroom.Place{}, "", err
	}
	body, err := readBody(w, r)
	if err != nil {
		return waitingroom.Place{}, "", err
	}
	b, err := s.buyerOf(r, body)
	if err != nil {
		return waitingroom.Place{}, "", err
	}
	if err := s.queue.CheckProof(r.Context(), b.id, r.Header.Get(proofHeader)); err != nil {
		var ch *waitingroom.ChallengeError
		if errors.As(err, &ch) {
			h := w.Header()
			h.Set(challengeHeader, ch.Challenge)
			h.Set(difficultyHeader, strconv.Itoa(ch.Difficulty))
			h.Set("Cache-Control", "no-store")
		}
		return waitingroom.Place{}, "", err
	}
	return s.queue.Join(r.Context(), b.id)
}

func (s *API) handlePoll(w http.ResponseWriter, r *http.Request) {
	p, err := s.queue.Poll(r.PathValue("id"))
	if err != nil {
		count(s.metrics.polls, s.metrics.pollsVec, problemFor(err).code)
		writeProblem(w, err)
		return
	}
	count(s.metrics.polls, s.metrics.pollsVec, p.State)
	writeQueueBody(w, http.StatusOK, bodyOf(p), p.Retry)
}

// writeQueueBody answers a join or a poll. Polls are the waiting room's
// most frequent call, so the body is appended by hand rather than by
// encoding/json's reflection; TestQueueBody_SameAsEncodingJSON keeps the
// two identical.
func writeQueueBody(w http.ResponseWriter, status int, b QueueBody, retry int) {
	body := appendQueueBody(make([]byte, 0, 256), b)
	h := w.Header()
	h["Retry-After"] = []string{strconv.Itoa(retry)}
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

var jsonContentType = []string{"application/json"}

// appendQueueBody appends b as encoding/json would, and a newline. Its
// strings are base64url tokens and fixed states: nothing to escape.
func appendQueueBody(dst []byte, b QueueBody) []byte {
	dst = append(dst, '{')
	if b.QueueID != "" {
		dst = append(dst, `"queueId":"`...)
		dst = append(dst, b.QueueID...)
		dst = append(dst, `",`...)
	}
	dst = append(dst, `"state":"`...)
	dst = append(dst, b.State...)
	dst = append(dst, `","position":`...)
	dst = appendOptInt(dst, b.Position)
	dst = append(dst, `,"estimatedWaitSeconds":`...)
	dst = appendOptInt(dst, b.EstimatedWaitSeconds)
	if b.Pass != "" {
		dst = append(dst, `,"pass":"`...)
		dst = append(dst, b.Pass...)
		dst = append(dst, '"')
	}
	if b.PassExpiresAt != nil {
		dst = append(dst, `,"passExpiresAt":"`...)
		dst = b.PassExpiresAt.AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	return append(dst, "}\n"...)
}

func appendOptInt(dst []byte, v *int64) []byte {
	if v == nil {
		return append(dst, "null"...)
	}
	return strconv.AppendInt(dst, *v, 10)
}
