package purchase_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/purchasetest"
)

// BenchmarkServer_HotSeat drives the pod's whole API server the way
// `make bench` drives it with wrk -t1 -c100: a net/http server with the
// production limits (purchase.ConfigureServer), keep-alive loopback TCP
// connections each sending the bench's POST and reading the answer, with a
// client that costs next to nothing (one write of fixed bytes, one read).
// "null" is hack/nullserver's handler and server: the ratio of its ns/op
// (or cpu-ns/op) to sold's or held's is the in-process counterpart of the
// bench's ratio to the null server, and the difference in allocs/op is
// what the pod allocates per request beyond it.
func BenchmarkServer_HotSeat(b *testing.B) {
	s := newTestSale(b, 10, func(c *purchase.Config) { c.LockTTL = time.Minute })
	if a := s.Buy(1, "winner"); a.Status != http.StatusCreated {
		b.Fatal(a.Code)
	}
	// Seat 2 is held by a buyer who never finishes, as hack/bench holds it.
	if _, err := s.Locks().Acquire(context.Background(), 2, "bench-holder"); err != nil {
		b.Fatal(err)
	}
	// hack/nullserver's handler and server, as it builds them.
	body := []byte(`{"type":"https://fluxorder.io/problems/ticket_sold","title":"Ticket sold","status":409,"detail":"this ticket is already sold","code":"ticket_sold"}` + "\n")
	contentType := []string{"application/problem+json"}
	contentLength := []string{strconv.Itoa(len(body))}
	null := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h["Content-Type"] = contentType
		h["Content-Length"] = contentLength
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write(body)
	}), ReadHeaderTimeout: 5 * time.Second}
	// The null server's handler under the pod's server limits (its
	// timeouts cost deadline updates per request): the gap from null to
	// null-limits is the server's configuration, the rest the pod's handler.
	nullLimits := &http.Server{Handler: null.Handler}
	purchase.ConfigureServer(nullLimits)
	pod := &http.Server{Handler: s.Pods[0].Svc.Handler()}
	purchase.ConfigureServer(pod)
	for _, c := range []struct {
		name string
		srv  *http.Server
		seat int
	}{{"null", null, 1}, {"null-limits", nullLimits, 1}, {"sold", pod, 1}, {"held", pod, 2}} {
		b.Run(c.name, func(b *testing.B) {
			asked := redisAsks(b, s)
			serveStorm(b, c.srv, c.seat)
			// How many refusals were Redis' answers rather than the pod's
			// memory's (sold set, held-seat memory).
			b.ReportMetric((redisAsks(b, s)-asked)/float64(b.N), "redis/op")
		})
	}
}

// redisAsks counts the pod's lock attempts that reached Redis.
func redisAsks(b *testing.B, s *testSale) float64 {
	var n float64
	for _, r := range []string{"acquired", "held", "sold", "on_hold", "error"} {
		n += purchasetest.Counter(b, s.Pods[0].Svc, "flux_order_lock_attempts_total", "result", r)
	}
	return n
}

// serveStorm serves srv on a loopback port and sends it POSTs of seat's
// purchase, as wrk's script in hack/bench does, from 50 connections per
// core; every answer must be a 409.
func serveStorm(b *testing.B, srv *http.Server, seat int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = ln.Close() })
	payload := `{"buyerId":"bench"}`
	req := []byte(fmt.Sprintf("POST /v1/tickets/%d/purchase HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nContent-Type: application/json\r\n\r\n%s",
		seat, ln.Addr(), len(payload), payload))
	b.SetParallelism(50)
	b.ReportAllocs()
	cpu0 := processCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		buf := make([]byte, 4096)
		for pb.Next() {
			if _, err := conn.Write(req); err != nil {
				b.Error(err)
				return
			}
			status, err := readAnswer(conn, buf)
			if err != nil || status != "409" {
				b.Errorf("answer %q: %v", status, err)
				return
			}
		}
	})
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// readAnswer reads one HTTP/1.1 answer with a Content-Length from conn
// into buf and returns its status code.
func readAnswer(conn net.Conn, buf []byte) (string, error) {
	n, end, size := 0, -1, 0
	for end < 0 || n < end+size {
		m, err := conn.Read(buf[n:])
		if err != nil {
			return "", err
		}
		n += m
		if end >= 0 {
			continue
		}
		i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
		if i < 0 {
			continue
		}
		end = i + 4
		j := bytes.Index(buf[:i], []byte("\r\nContent-Length: "))
		if j < 0 {
			return "", fmt.Errorf("no Content-Length in %q", buf[:i])
		}
		v, _, _ := bytes.Cut(buf[j+18:i+2], []byte("\r\n"))
		if size, err = strconv.Atoi(string(v)); err != nil {
			return "", err
		}
	}
	if n < 12 {
		return "", fmt.Errorf("short answer %q", buf[:n])
	}
	return string(buf[9:12]), nil
}
