package frontdoor

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/purchase/sale"
)

func req(remote string, headers ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/v1/events", nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return r
}

func TestClient(t *testing.T) {
	kind, err := ParsePrefixes([]string{"10.244.0.0/16", "fd00::1"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		trusted []netip.Prefix
		r       *http.Request
		want    string // "" = not capped
	}{
		{"direct, none trusted", nil, req("192.0.2.7:5000"), "192.0.2.7"},
		{"forwarded, none trusted: some proxy's buyers share its address", nil, req("10.244.0.9:5000", "X-Forwarded-For", "198.51.100.1"), ""},
		{"X-Real-IP, none trusted", nil, req("10.244.0.9:5000", "X-Real-Ip", "198.51.100.1"), ""},
		{"trusted proxy forwards the client", kind, req("10.244.0.9:5000", "X-Forwarded-For", "198.51.100.1"), "198.51.100.1"},
		{"the client's own X-Forwarded-For is left of the proxy's hop", kind, req("10.244.0.9:5000", "X-Forwarded-For", "1.2.3.4, 198.51.100.1"), "198.51.100.1"},
		{"two headers, trusted hops skipped", kind, req("10.244.0.9:5000", "X-Forwarded-For", "1.2.3.4", "X-Forwarded-For", "198.51.100.2, 10.244.3.3"), "198.51.100.2"},
		{"X-Real-IP from a trusted proxy", kind, req("10.244.0.9:5000", "X-Real-Ip", "198.51.100.3"), "198.51.100.3"},
		{"a trusted proxy forwarding nothing", kind, req("10.244.0.9:5000"), ""},
		{"an untrusted peer's header is ignored", kind, req("192.0.2.8:5000", "X-Forwarded-For", "198.51.100.1"), "192.0.2.8"},
		{"garbage hop", kind, req("10.244.0.9:5000", "X-Forwarded-For", "nonsense"), ""},
		{"IPv6 trusted proxy, mapped client", kind, req("[fd00::1]:5000", "X-Forwarded-For", "::ffff:198.51.100.4"), "198.51.100.4"},
	}
	for _, c := range cases {
		a, capped := client(c.trusted, c.r)
		got := ""
		if capped {
			got = a.String()
		}
		if got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

func TestParsePrefixes_Refuses(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "ten", "10.0.0.0/8/1"} {
		if _, err := ParsePrefixes([]string{bad}); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestOpenStream_CapPerClient(t *testing.T) {
	d := New(Settings{MaxStreamsPerClient: 2}, prometheus.NewRegistry())
	var rel []func()
	for range 2 {
		f, err := d.OpenStream(req("192.0.2.1:1"))
		if err != nil {
			t.Fatal(err)
		}
		rel = append(rel, f)
	}
	_, err := d.OpenStream(req("192.0.2.1:2"))
	var ra *sale.RetryAfterError
	if !errors.As(err, &ra) || !errors.Is(err, sale.ErrTooManyRequests) || ra.Seconds < 1 {
		t.Fatalf("third stream: want too many requests with Retry-After, got %v", err)
	}
	if _, err := d.OpenStream(req("192.0.2.2:1")); err != nil {
		t.Fatalf("another client: %v", err)
	}
	rel[0]()
	if _, err := d.OpenStream(req("192.0.2.1:3")); err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	// IPv6 clients share their /64.
	d.Set(Settings{MaxStreamsPerClient: 1})
	if _, err := d.OpenStream(req("[2001:db8::1]:1")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.OpenStream(req("[2001:db8::2]:1")); !errors.Is(err, sale.ErrTooManyRequests) {
		t.Fatalf("same /64: want refused, got %v", err)
	}
}

func TestJoin_TokenBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	d := New(Settings{JoinsPerClientPerMinute: 6}, prometheus.NewRegistry())
	d.joins = newBuckets(func() time.Time { return now })
	for i := range 6 {
		if err := d.Join(req("192.0.2.1:1")); err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
	}
	err := d.Join(req("192.0.2.1:1"))
	var ra *sale.RetryAfterError
	if !errors.As(err, &ra) || ra.Seconds != 10 {
		t.Fatalf("7th join: want Retry-After 10 (6 a minute), got %v %+v", err, ra)
	}
	if err := d.Join(req("192.0.2.2:1")); err != nil {
		t.Fatalf("another client: %v", err)
	}
	now = now.Add(10 * time.Second)
	if err := d.Join(req("192.0.2.1:1")); err != nil {
		t.Fatalf("after 10s one token is back: %v", err)
	}
	if err := d.Join(req("192.0.2.1:1")); err == nil {
		t.Fatal("only one")
	}
	// Not capped: a proxy's forwarded requests without trusted proxies.
	for range 20 {
		if err := d.Join(req("10.0.0.1:1", "X-Forwarded-For", "192.0.2.1")); err != nil {
			t.Fatal(err)
		}
	}
}

// The buckets' memory is bounded: a client cycling through addresses
// never holds more than two generations of maxBuckets.
func TestBuckets_Bounded(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBuckets(func() time.Time { return now })
	for i := range 3 * maxBuckets {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		b.take(a, 60)
	}
	if n := b.size(); n > 2*maxBuckets {
		t.Fatalf("%d buckets held, bound %d", n, 2*maxBuckets)
	}
	now = now.Add(2 * generation)
	b.take(netip.MustParseAddr("192.0.2.1"), 60)
	b.take(netip.MustParseAddr("192.0.2.1"), 60)
	if n := b.size(); n > 2*maxBuckets {
		t.Fatalf("%d buckets held", n)
	}
}
