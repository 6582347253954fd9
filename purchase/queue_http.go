package purchase

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// queueRoutes serves the waiting room: POST /v1/queue joins it, GET
// /v1/queue/{queueId} polls it. Both answer 404 queue_not_found while the
// sale has no waiting room.
func (s *Service) queueRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/v1/queue", s.handleJoin)
	mux.HandleFunc("/v1/queue/{id}", get(s.handlePoll))
}

// queueBody is the answer of a join or a poll.
type queueBody struct {
	QueueID              string     `json:"queueId,omitempty"`
	State                string     `json:"state"`
	Position             *int64     `json:"position"`
	EstimatedWaitSeconds *int64     `json:"estimatedWaitSeconds"`
	Pass                 string     `json:"pass,omitempty"`
	PassExpiresAt        *time.Time `json:"passExpiresAt,omitempty"`
}

func (p place) body() queueBody {
	b := queueBody{State: p.State, Position: p.Position, EstimatedWaitSeconds: p.Wait, Pass: p.Pass}
	if p.Pass != "" {
		exp := p.Expires.UTC()
		b.PassExpiresAt = &exp
	}
	return b
}

func (s *Service) handleJoin(w http.ResponseWriter, r *http.Request) {
	p, id, err := s.serveJoin(w, r)
	if err != nil {
		s.queue.metrics.joins.WithLabelValues(problemFor(err).code).Inc()
		writeProblem(w, err)
		return
	}
	s.queue.metrics.joins.WithLabelValues(p.State).Inc()
	b := p.body()
	b.QueueID = id
	status := http.StatusAccepted
	if p.State != stateWaiting {
		status = http.StatusOK // admitted (a re-join), or closed
	}
	writeQueueBody(w, status, b, p.Retry)
}

// serveJoin enqueues the body's buyer, or finds their place: the same
// buyer always gets the same queue id and place.
func (s *Service) serveJoin(w http.ResponseWriter, r *http.Request) (place, string, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return place{}, "", errMethodNotAllowed
	}
	wr := s.queue.settings.Load()
	if !wr.on() {
		return place{}, "", ErrQueueNotFound
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return place{}, "", fmt.Errorf("%w: body larger than %d bytes or unreadable", ErrInvalidRequest, maxBodyBytes)
	}
	req, err := decodePurchase(body, "")
	if err != nil {
		return place{}, "", err
	}
	now := time.Now()
	sch := s.schedule.Load()
	switch {
	case !wr.JoinFrom.IsZero() && now.Before(wr.JoinFrom):
		return place{}, "", &RetryAfterError{Seconds: clampSeconds(wr.JoinFrom.Sub(now), 1, 3600), Err: ErrSaleNotStarted}
	case !sch.EndsAt.IsZero() && !now.Before(sch.EndsAt):
		return place{}, "", ErrSaleEnded
	}
	v, err := s.queue.currentView(now)
	if err != nil {
		return place{}, "", err
	}
	if v.available <= 0 {
		if v.held > 0 {
			// Every seat is sold or held: held seats may come back.
			return place{}, "", &RetryAfterError{Seconds: 5, Err: ErrSoldOut}
		}
		return place{}, "", ErrSoldOut
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), joinTimeout)
	defer cancel()
	j, err := s.queue.join(ctx, req.BuyerID)
	if err != nil {
		return place{}, "", err
	}
	t := queueTicket{Buyer: j.BuyerID, Seq: j.Seq, JoinedAt: j.JoinedAt}
	// A fresh view: the buyer may have been admitted while their join
	// waited for its batch.
	v, _ = s.queue.currentView(time.Now())
	return s.queue.standing(v, t, time.Now()), s.queue.signer.queueID(t), nil
}

func (s *Service) handlePoll(w http.ResponseWriter, r *http.Request) {
	p, err := s.servePoll(r)
	if err != nil {
		s.queue.metrics.polls.WithLabelValues(problemFor(err).code).Inc()
		writeProblem(w, err)
		return
	}
	s.queue.metrics.polls.WithLabelValues(p.State).Inc()
	writeQueueBody(w, http.StatusOK, p.body(), p.Retry)
}

// servePoll answers from the queue id and the pod's view: no I/O.
func (s *Service) servePoll(r *http.Request) (place, error) {
	if !s.queue.settings.Load().on() {
		return place{}, ErrQueueNotFound
	}
	t, err := s.queue.signer.parseQueueID(r.PathValue("id"))
	if err != nil {
		return place{}, ErrQueueNotFound
	}
	now := time.Now()
	v, err := s.queue.currentView(now)
	if err != nil {
		return place{}, err
	}
	return s.queue.standing(v, t, now), nil
}

// currentView is the pod's view, unless it is missing or too old to vouch
// for (the database has been unreachable).
func (q *waitingRoom) currentView(now time.Time) (*queueView, error) {
	v := q.view.Load()
	if v == nil || now.Sub(v.at) > staleView {
		return nil, unavailable(ErrDatabaseUnavailable, fmt.Errorf("the queue view is missing or stale"))
	}
	return v, nil
}

// SetWaitingRoom changes the waiting room's settings live (an AdmitPerSecond
// of 0 turns it off: everyone may buy without a pass).
func (s *Service) SetWaitingRoom(wr WaitingRoom) { s.queue.set(wr) }

// writeQueueBody answers a join or a poll. Polls are the waiting room's
// most frequent call, so the body is appended by hand rather than by
// encoding/json's reflection; TestQueueBody_SameAsEncodingJSON keeps the
// two identical.
func writeQueueBody(w http.ResponseWriter, status int, b queueBody, retry int) {
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
func appendQueueBody(dst []byte, b queueBody) []byte {
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
