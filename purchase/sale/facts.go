package sale

import "time"

// Facts is GET /v1/sale and the page's "sale" event: the public facts the
// page needs, all of them live. Nothing internal: no addresses, no pod
// names, no secrets.
type Facts struct {
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
