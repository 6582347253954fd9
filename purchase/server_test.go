package purchase_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
)

// Item 4: a client that sends its headers and then stalls its body (or
// drips it) is cut off by the read timeout instead of holding a connection
// forever.
func TestServer_StalledBody_IsCutOff(t *testing.T) {
	s := newTestSale(t, 10)
	addr := strings.TrimPrefix(s.Pods[0].URL, "http://")
	for _, drip := range []bool{false, true} {
		t.Run(fmt.Sprintf("drip %v", drip), func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			fmt.Fprintf(c, "POST /v1/tickets/1/purchase HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{")
			closed := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, c); close(closed) }()
			for drip {
				select {
				case <-closed:
					drip = false
					continue
				case <-time.After(200 * time.Millisecond):
					_, _ = c.Write([]byte(" "))
				}
			}
			select {
			case <-closed:
			case <-time.After(purchase.ReadTimeout + 3*time.Second):
				t.Fatalf("connection still open %v after a stalled body (read timeout %v)", time.Since(start), purchase.ReadTimeout)
			}
			if d := time.Since(start); d < purchase.ReadTimeout-time.Second {
				t.Fatalf("cut after %v, before the read timeout %v", d, purchase.ReadTimeout)
			}
		})
	}
}

// Item 4: SIGTERM with stalled and idle clients: /readyz fails while the
// pod still serves (the drain window), then the server drains and Serve
// returns nil (exit 0) within the grace.
func TestServe_SIGTERMWithStalledClients_ReadyzFailsFirstThenExits0WithinGrace(t *testing.T) {
	s := newTestSale(t, 10)
	pod := s.Run(func(c *purchase.Config) { c.ShutdownGrace, c.DrainDelay = 2*time.Second, 700*time.Millisecond }, nil)
	cfg, base, stop, served := pod.Cfg, pod.URL, pod.SIGTERM, pod.Served

	stalled, err := net.Dial("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	fmt.Fprintf(stalled, "POST /v1/tickets/1/purchase HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
	idle := &http.Client{Transport: &http.Transport{}}
	if resp, err := idle.Get(base + "/healthz"); err == nil { // leaves a keep-alive connection
		resp.Body.Close()
	}

	sigterm := time.Now()
	stop()
	var readyzFailed bool
	testservers.Eventually(t, cfg.DrainDelay, 20*time.Millisecond, "/readyz to fail during the drain window", testservers.Holds(func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		readyzFailed = resp.StatusCode == http.StatusServiceUnavailable
		return readyzFailed
	}))
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after SIGTERM: want nil (exit 0), got %v", err)
		}
	case <-time.After(cfg.ShutdownGrace + time.Second):
		t.Fatalf("Serve still running %v after SIGTERM (grace %v)", time.Since(sigterm), cfg.ShutdownGrace)
	}
	if d := time.Since(sigterm); d < cfg.DrainDelay {
		t.Fatalf("Serve returned after %v, before the drain window of %v ended", d, cfg.DrainDelay)
	}
}
