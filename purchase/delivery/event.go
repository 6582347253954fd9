package delivery

import (
	"encoding/json"
	"time"
)

// Queue holds the retries of deliveries, worked by every pod's River
// client.
const Queue = "webhooks"

// River job kinds. KindEvent is the previous outbox's (its trigger, gone
// since *_outbox_cursor.sql, and that version's sale events).
const (
	KindEvent    = "flux_order_event"
	KindDelivery = "flux_order_webhook"
)

// EventArgs is one event as the fan-out reads it, turned into one
// delivery per webhook that wants its type.
type EventArgs struct {
	// ID is the event's webhook-id: the order id for order.confirmed,
	// "order.cancelled:<order id>" for order.cancelled, "<type>:<sale>"
	// for the sale's own events (each happens once).
	ID   string
	Type string
	// Seq is the per-sale sequence number (the cursor's next_seq when the
	// event was claimed).
	Seq int64
	// At is when the event happened (an order's purchasedAt).
	At   time.Time
	Data json.RawMessage
}

// DeliveryArgs is one event for one webhook. Body is rendered once, when
// the event is fanned out, so every attempt sends the same bytes.
type DeliveryArgs struct {
	Webhook string    `json:"webhook"`
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	At      time.Time `json:"at"`
	Body    string    `json:"body,omitempty"`
}

// Kind is River's job kind.
func (DeliveryArgs) Kind() string { return KindDelivery }

// Body is what a receiver gets: {"type", "timestamp", "sequence", "data"}.
type Body struct {
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Sequence  int64           `json:"sequence"`
	Data      json.RawMessage `json:"data"`
}
