// Package ssetest reads the seat-change stream (GET /v1/events) as a page
// does, for tests: it decodes the wire format independently of the server's
// code (docs/sale-page.md), so a change to either side is caught.
package ssetest

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Seat states on the wire.
const (
	Available byte = 0
	Held      byte = 1
	Sold      byte = 2
)

// Event is one server-sent event; comments (heartbeats) are named "comment".
type Event struct{ Name, Data string }

// Counts are the counters every seat event carries.
type Counts struct {
	Tickets   int64 `json:"tickets"`
	Sold      int64 `json:"sold"`
	Held      int64 `json:"held"`
	Available int64 `json:"available"`
}

// SeatEvent is the data of a snapshot or seats event.
type SeatEvent struct {
	Counts
	Seats json.RawMessage `json:"seats"`
}

// Open connects to GET base/v1/events and returns its events on a channel,
// closed when the stream ends; stop hangs up.
func Open(t testing.TB, base string) (events <-chan Event, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("GET /v1/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan Event, 1024)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var ev Event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Name != "" || ev.Data != "" {
					out <- ev
				}
				ev = Event{}
			case strings.HasPrefix(line, ":"):
				out <- Event{Name: "comment", Data: line}
			case strings.HasPrefix(line, "event: "):
				ev.Name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.Data = line[len("data: "):]
			}
		}
	}()
	return out, cancel
}

// Next waits for the next event named name (skipping others).
func Next(t testing.TB, events <-chan Event, name string, within time.Duration) Event {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended while waiting for a %q event", name)
			}
			if ev.Name == name {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %q event within %v", name, within)
		}
	}
}

// DecodeSnapshot returns a snapshot's counts and every seat's state
// (index = seat id).
func DecodeSnapshot(t testing.TB, ev Event) (SeatEvent, []byte) {
	t.Helper()
	var d SeatEvent
	if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
		t.Fatal(err)
	}
	var b64 string
	if err := json.Unmarshal(d.Seats, &b64); err != nil {
		t.Fatal(err)
	}
	packed, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	states := make([]byte, d.Tickets+1)
	for id := int64(1); id <= d.Tickets; id++ {
		states[id] = packed[(id-1)/4] >> ((id - 1) % 4 * 2) & 3
	}
	return d, states
}

// WaitSeat waits until a seats event sets seat id to state, and returns the
// counts of that event.
func WaitSeat(t testing.TB, events <-chan Event, id int64, state byte, within time.Duration) Counts {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ev := Next(t, events, "seats", time.Until(deadline))
		var d SeatEvent
		var pairs []int64
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(d.Seats, &pairs); err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(pairs); i += 2 {
			if pairs[i] == id && byte(pairs[i+1]) == state {
				return d.Counts
			}
		}
	}
}
