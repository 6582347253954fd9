package seatfeed

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"
)

// readEvent reads one event (up to its blank line) from r, skipping the
// retry field and comments.
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var ev strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v (so far %q)", err, ev.String())
		}
		if line == "\n" {
			if ev.Len() > 0 {
				return ev.String()
			}
			continue
		}
		if strings.HasPrefix(line, "retry:") || strings.HasPrefix(line, ":") {
			continue
		}
		ev.WriteString(line)
	}
}

// Issue 17: a page that accepts gzip gets the stream gzip-compressed, each
// event readable as soon as it is sent (a delta within a second of the
// sale), and a complete gzip member (its CRC checked) when the hub ends
// it. A page that does not gets plain text.
func TestHub_Gzip_EventsArriveCompressed_AndTheMemberEndsValid(t *testing.T) {
	src := newFakeSeats()
	h := newTestHub(src, 5)
	url := serve(t, h, 0)
	req, _ := http.NewRequest(http.MethodGet, url+"/v1/events", nil)
	req.Header.Set("Accept-Encoding", "gzip") // set by hand: the transport does not decompress it then
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" || !strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
		t.Fatalf("headers: %v", resp.Header)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(zr)
	if ev := readEvent(t, br); !strings.HasPrefix(ev, "event: sale\n") {
		t.Fatalf("first event: %q", ev)
	}
	if ev := readEvent(t, br); !strings.HasPrefix(ev, "event: snapshot\n") {
		t.Fatalf("second event: %q", ev)
	}
	src.sell(3)
	got := make(chan string, 1)
	go func() { got <- readEvent(t, br) }()
	select {
	case ev := <-got:
		if !strings.HasPrefix(ev, "event: seats\n") || !strings.Contains(ev, `"seats":[3,2]`) {
			t.Fatalf("delta: %q", ev)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a compressed delta did not arrive within 2s: events must be flushed one by one")
	}
	h.Close()
	if rest, err := io.ReadAll(br); err != nil {
		t.Fatalf("the stream's end is not a valid gzip member: %v (read %q)", err, rest)
	}

	plain, _ := http.NewRequest(http.MethodGet, url+"/v1/events", nil)
	plain.Header.Set("Accept-Encoding", "gzip;q=0, identity")
	h2 := newTestHub(src, 5)
	url2 := serve(t, h2, 0)
	plain.URL.Host = strings.TrimPrefix(url2, "http://")
	resp2, err := http.DefaultClient.Do(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	if resp2.Header.Get("Content-Encoding") != "" {
		t.Fatalf("gzip;q=0 got %q", resp2.Header.Get("Content-Encoding"))
	}
	if ev := readEvent(t, bufio.NewReader(resp2.Body)); !strings.HasPrefix(ev, "event: sale\n") {
		t.Fatalf("plain first event: %q", ev)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for v, want := range map[string]bool{
		"": false, "gzip": true, "gzip, deflate, br, zstd": true, "br;q=1.0, GZIP;q=0.5": true,
		"gzip;q=0": false, "gzip; q=0.0": false, "identity": false, "x-gzip": false,
	} {
		r, _ := http.NewRequest(http.MethodGet, "/v1/events", nil)
		if v != "" {
			r.Header.Set("Accept-Encoding", v)
		}
		if got := acceptsGzip(r); got != want {
			t.Errorf("%q: %v, want %v", v, got, want)
		}
	}
}

// The deflated events concatenate: any sequence of them, after the
// header, decodes to the plain events in that order.
func TestDeflatedEvents_Concatenate(t *testing.T) {
	evs := []*event{retryEvent, newEvent([]byte("event: a\ndata: 1\n\n")), heartbeatEvent, newEvent(bytes.Repeat([]byte("x"), 100_000)), heartbeatEvent}
	var z gzStream
	out := append([]byte(nil), gzipHeader...)
	var want []byte
	for _, ev := range evs {
		out = append(out, z.frame(ev)...)
		want = append(want, ev.plain...)
	}
	out = append(out, z.trailer()...)
	zr, err := gzip.NewReader(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("decoded %d bytes (err %v), want %d", len(got), err, len(want))
	}
}

// Issue 17: the snapshot of 10M seats, plain and deflated, for a sale
// fresh, a quarter sold at random, half sold at random, sold in blocks of
// 50, and sold out. docs/sale-page.md quotes these sizes.
func TestSnapshot_10MSeats_Sizes(t *testing.T) {
	if testing.Short() {
		t.Skip("compresses 5 snapshots of 10M seats")
	}
	const n = 10_000_000
	rng := rand.New(rand.NewPCG(1, 2))
	patterns := []struct {
		name string
		seat func(id int) byte
	}{
		{"fresh (all available)", func(int) byte { return seatAvailable }},
		{"25% sold at random", func(int) byte {
			if rng.IntN(4) == 0 {
				return seatSold
			}
			return seatAvailable
		}},
		{"50% sold, 2% held at random", func(int) byte {
			switch r := rng.IntN(100); {
			case r < 50:
				return seatSold
			case r < 52:
				return seatHeld
			}
			return seatAvailable
		}},
		{"50% sold in blocks of 50", func(id int) byte {
			if (id/50)%2 == 0 {
				return seatSold
			}
			return seatAvailable
		}},
		{"sold out", func(int) byte { return seatSold }},
	}
	var fresh int
	for _, p := range patterns {
		h := &Hub{seats: make([]byte, n+1), lastFacts: []byte("{}")}
		for id := 1; id <= n; id++ {
			h.seats[id] = p.seat(id)
			h.count(h.seats[id], +1)
		}
		ev := h.snapshotEvent()
		start := time.Now()
		gz := ev.deflated()
		took := time.Since(start)
		t.Logf("SIZE 10M seats, %-30s plain %9d B, gzip %9d B (%.1f%%), deflated once in %v", p.name, len(ev.plain), len(gz), 100*float64(len(gz))/float64(len(ev.plain)), took.Round(time.Millisecond))
		if p.name == patterns[0].name {
			fresh = len(gz)
		}
		if len(gz) >= len(ev.plain) {
			t.Errorf("%s: gzip %d ≥ plain %d", p.name, len(gz), len(ev.plain))
		}
	}
	if fresh > 100_000 {
		t.Errorf("a fresh sale's 10M-seat snapshot deflates to %d B, want ≤ 100 kB", fresh)
	}
}
