package delivery

import (
	"encoding/json"
	"time"

	"github.com/riverqueue/river"
)

// Queues. EventQueue held the events of the outbox before the cursor
// (migration *_outbox_cursor.sql); no River client works it. Queue holds
// the retries of deliveries, worked by every pod's River client.
const (
	EventQueue = "webhook_events"
	Queue      = "webhooks"
)

// River job kinds. KindEvent is the previous outbox's (its trigger, gone
// since *_outbox_cursor.sql, and that version's sale events).
const (
	KindEvent    = "flux_order_event"
	KindDelivery = "flux_order_webhook"
)

// EventArgs is one event as the fan-out reads it (and as the previous
// outbox held it in river_job), turned into one delivery per webhook that
// wants its type.
type EventArgs struct {
	// ID is the event's webhook-id: the order id for order.confirmed,
	// "order.cancelled:<order id>" for order.cancelled, "<type>:<sale>"
	// for the sale's own events (each happens once).
	ID   string `json:"id"`
	Type string `json:"type"`
	// Seq is the per-sale sequence number (webhook_event_seq).
	Seq int64 `json:"seq"`
	// At is when the event happened (an order's purchasedAt).
	At   time.Time       `json:"at"`
	Data json.RawMessage `json:"data"`
}

// Kind is River's job kind.
func (EventArgs) Kind() string { return KindEvent }

// InsertOpts puts events on the events queue.
func (EventArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: EventQueue} }

// DeliveryArgs is one event for one webhook. Body is rendered once, when
// the event is fanned out, so every attempt sends the same bytes.
type DeliveryArgs struct {
	Webhook string    `json:"webhook"`
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	At      time.Time `json:"at"`
	// Body is omitted from the completed rows of deliveries the fan-out
	// made itself: nothing sends them again (and a smaller row is
	// cheaper to index: River's GIN index on args).
	Body string `json:"body,omitempty"`
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
