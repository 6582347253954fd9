package purchase

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"
)

// pageState is what the sale page needs from a Service beyond the purchase
// path: the event's name (live) and the pod's one seat-change feed.
type pageState struct {
	displayName atomic.Pointer[string]
	feed        *seatFeed
}

// SetDisplayName changes the event's name on the page ("": the sale's).
func (s *Service) SetDisplayName(name string) {
	if name == "" {
		name = s.cfg.Sale
	}
	s.page.displayName.Store(&name)
}

// SaleFacts is GET /v1/sale: the public facts the page needs, all of them
// live. Nothing internal: no addresses, no pod names, no secrets.
type SaleFacts struct {
	DisplayName string     `json:"displayName"`
	Tickets     int64      `json:"tickets"`
	StartsAt    *time.Time `json:"startsAt,omitempty"`
	EndsAt      *time.Time `json:"endsAt,omitempty"`
	Paused      bool       `json:"paused"`
	// HoldTTL is a hold's life in seconds; 0: holds are off and a click
	// buys the seat at once.
	HoldTTL            float64         `json:"holdTTL"`
	WaitingRoom        WaitingRoomInfo `json:"waitingRoom"`
	MaxTicketsPerBuyer int             `json:"maxTicketsPerBuyer"`
}

// WaitingRoomInfo says whether buyers queue first, and from when.
type WaitingRoomInfo struct {
	Enabled  bool       `json:"enabled"`
	JoinFrom *time.Time `json:"joinFrom,omitempty"`
}

// saleFactsBody adds the server's clock, so that countdowns are right on a
// buyer's device whose clock is off.
type saleFactsBody struct {
	SaleFacts
	ServerTime time.Time `json:"serverTime"`
}

// SaleFacts returns the facts as of now.
func (s *Service) SaleFacts() SaleFacts {
	sch := s.schedule.Load()
	f := SaleFacts{
		DisplayName:        *s.page.displayName.Load(),
		Tickets:            s.tickets.Load(),
		Paused:             sch.Paused,
		MaxTicketsPerBuyer: int(s.maxPerBuyer.Load()),
		HoldTTL:            s.HoldTTL().Seconds(),
	}
	if !sch.StartsAt.IsZero() {
		t := sch.StartsAt.UTC()
		f.StartsAt = &t
	}
	if !sch.EndsAt.IsZero() {
		t := sch.EndsAt.UTC()
		f.EndsAt = &t
	}
	if wr := s.queue.settings.Load(); wr.on() {
		f.WaitingRoom.Enabled = true
		if !wr.JoinFrom.IsZero() {
			t := wr.JoinFrom.UTC()
			f.WaitingRoom.JoinFrom = &t
		}
	}
	return f
}

func (s *Service) handleSale(w http.ResponseWriter, _ *http.Request) {
	body, err := json.Marshal(saleFactsBody{SaleFacts: s.SaleFacts(), ServerTime: time.Now().UTC()})
	if err != nil {
		writeProblem(w, err)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, json.RawMessage(body))
}
