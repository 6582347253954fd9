package purchase_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/frontdoor"
	"github.com/flux-order/flux-order/purchase/httpapi"
	"github.com/flux-order/flux-order/purchase/statusreport"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// from is an HTTP client whose connections leave from 127.0.0.n (Linux
// routes all of 127/8 to lo): a distinct client address per n.
func from(n byte) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, n)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// openStreamFrom opens GET /v1/events from c; on a 200 the stream stays open
// until the returned close. It returns the status and problem code.
func openStreamFrom(t *testing.T, c *http.Client, url string, header ...string) (int, string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/events", nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c.Timeout = 0 // a stream outlives any client timeout
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /v1/events: %v", err)
	}
	if resp.StatusCode == http.StatusOK {
		t.Cleanup(func() { cancel(); resp.Body.Close() })
		return resp.StatusCode, "", func() { cancel(); resp.Body.Close() }
	}
	defer cancel()
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var p httpapi.Problem
	_ = json.Unmarshal(raw, &p)
	if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
		t.Errorf("a 429 without Retry-After")
	}
	return resp.StatusCode, p.Code, func() {}
}

// Issue 17: streams per client address. Each of 127.0.0.2 and .3 gets its
// cap and then 429 too_many_requests; the pod's own cap still answers 503
// beyond it; a closed stream frees its client's place.
func TestFrontDoor_StreamsPerClient_From127Addresses(t *testing.T) {
	s := newTestSale(t, 10, func(c *purchase.Config) {
		c.MaxStreams = 5
		c.FrontDoor = frontdoor.Settings{MaxStreamsPerClient: 2}
	})
	url := s.Pods[0].URL
	var closeFirst func()
	for _, n := range []byte{2, 3} {
		for i := range 2 {
			st, code, closeIt := openStreamFrom(t, from(n), url)
			if st != http.StatusOK {
				t.Fatalf("127.0.0.%d stream %d: %d %s", n, i+1, st, code)
			}
			if closeFirst == nil {
				closeFirst = closeIt
			}
		}
		if st, code, _ := openStreamFrom(t, from(n), url); st != http.StatusTooManyRequests || code != "too_many_requests" {
			t.Fatalf("127.0.0.%d third stream: want 429 too_many_requests, got %d %s", n, st, code)
		}
	}
	if st, code, _ := openStreamFrom(t, from(4), url); st != http.StatusOK {
		t.Fatalf("127.0.0.4: %d %s", st, code)
	}
	if st, code, _ := openStreamFrom(t, from(5), url); st != http.StatusServiceUnavailable || code != "unavailable" {
		t.Fatalf("the pod serves 5: want 503, got %d %s", st, code)
	}
	closeFirst()
	err := testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "127.0.0.2's closed stream released", func() error {
		st, code, _ := openStreamFrom(t, from(2), url)
		if st != http.StatusOK {
			return fmt.Errorf("%d %s", st, code)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Behind an Ingress: without trusted proxies, forwarded requests are not
// capped per client (they would all share the proxy's address); with the
// proxy trusted, each forwarded client has its own cap, and a client
// cannot escape it by adding its own X-Forwarded-For.
func TestFrontDoor_StreamsPerClient_BehindATrustedProxy(t *testing.T) {
	s := newTestSale(t, 10, func(c *purchase.Config) {
		c.FrontDoor = frontdoor.Settings{MaxStreamsPerClient: 1}
	})
	url := s.Pods[0].URL
	proxy := from(9)
	for i := range 3 {
		if st, code, _ := openStreamFrom(t, proxy, url, "X-Forwarded-For", "198.51.100.1"); st != http.StatusOK {
			t.Fatalf("untrusted proxy, stream %d: %d %s", i+1, st, code)
		}
	}
	s.Pods[0].Svc.Door.Set(frontdoor.Settings{MaxStreamsPerClient: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}})
	if st, code, _ := openStreamFrom(t, proxy, url, "X-Forwarded-For", "198.51.100.2"); st != http.StatusOK {
		t.Fatalf("trusted proxy, client .2: %d %s", st, code)
	}
	if st, code, _ := openStreamFrom(t, proxy, url, "X-Forwarded-For", "6.6.6.6, 198.51.100.2"); st != http.StatusTooManyRequests || code != "too_many_requests" {
		t.Fatalf("trusted proxy, client .2 again (a spoofed hop to its left): want 429, got %d %s", st, code)
	}
	if st, code, _ := openStreamFrom(t, proxy, url, "X-Real-Ip", "198.51.100.3"); st != http.StatusOK {
		t.Fatalf("trusted proxy, client .3 by X-Real-IP: %d %s", st, code)
	}
	// An untrusted peer is its own client, whatever it forwards.
	if st, code, _ := openStreamFrom(t, from(10), url, "X-Forwarded-For", "198.51.100.4"); st != http.StatusOK {
		t.Fatalf("direct .10: %d %s", st, code)
	}
	if st, code, _ := openStreamFrom(t, from(10), url, "X-Forwarded-For", "198.51.100.5"); st != http.StatusTooManyRequests {
		t.Fatalf("direct .10 again: want 429, got %d %s", st, code)
	}
}

// Issue 17: joins per client address, a token bucket: 3 at once, then 429
// too_many_requests with Retry-After (20 s at 3 a minute); another address
// joins.
func TestFrontDoor_JoinsPerClient(t *testing.T) {
	s := newQueueSale(t, 10, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 1}), func(c *purchase.Config) {
		c.FrontDoor = frontdoor.Settings{JoinsPerClientPerMinute: 3}
	})
	join := func(n byte, buyer string) (int, string, string) {
		resp, err := from(n).Post(s.Pods[0].URL+"/v1/queue", "application/json", strings.NewReader(fmt.Sprintf(`{"buyerId":%q}`, buyer)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p httpapi.Problem
		_ = json.NewDecoder(resp.Body).Decode(&p)
		return resp.StatusCode, p.Code, resp.Header.Get("Retry-After")
	}
	for i := range 3 {
		if st, code, _ := join(2, fmt.Sprintf("bot-%d", i)); st != http.StatusAccepted && st != http.StatusOK {
			t.Fatalf("join %d: %d %s", i+1, st, code)
		}
	}
	if st, code, ra := join(2, "bot-3"); st != http.StatusTooManyRequests || code != "too_many_requests" || ra != "20" {
		t.Fatalf("4th join from 127.0.0.2: want 429 too_many_requests Retry-After 20, got %d %s %q", st, code, ra)
	}
	if st, code, _ := join(3, "carol"); st != http.StatusAccepted && st != http.StatusOK {
		t.Fatalf("127.0.0.3: %d %s", st, code)
	}
}

// spec.frontDoor is live: it replaces the flags' caps when set, and the
// flags' come back when it is removed.
func TestFrontDoor_LiveFromTheFlashSale(t *testing.T) {
	s := newTestSale(t, 10, func(c *purchase.Config) {
		c.FrontDoor = frontdoor.Settings{MaxStreamsPerClient: 1}
	})
	pod := s.Pods[0].Svc
	three, zero := int32(3), int32(0)
	pod.Apply(statusreport.Settings{Tickets: 10, LockTTL: time.Second, FrontDoor: &salesv1alpha1.FrontDoorSpec{
		TrustedProxies: []string{"10.244.0.0/16"}, MaxStreamsPerClient: &three, JoinsPerClientPerMinute: &zero}})
	got := pod.Door.Settings()
	if got.MaxStreamsPerClient != 3 || got.JoinsPerClientPerMinute != 0 || len(got.TrustedProxies) != 1 || got.TrustedProxies[0].String() != "10.244.0.0/16" {
		t.Fatalf("live settings: %+v", got)
	}
	pod.Apply(statusreport.Settings{Tickets: 10, LockTTL: time.Second})
	if got := pod.Door.Settings(); got.MaxStreamsPerClient != 1 || len(got.TrustedProxies) != 0 {
		t.Fatalf("without spec.frontDoor, the flags': %+v", got)
	}
}
