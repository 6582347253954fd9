package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
)

// BenchmarkClient compares the two ways the load client can send a
// purchase: the hand-written HTTP/1.1 connection of h1.go (what the
// hot-seat, sell-out, any-seat, mixed and hold-confirm scenarios use) and
// net/http (what the queue scenario uses), on the same request against the
// same server, in the same run.
//
// Both send POST /v1/tickets/17/purchase with {"buyerId":"buyer-N"} and get
// the sold seat's pre-rendered 409 problem+json, classify it as the engine
// does, and keep their connections alive: h1 one connection per worker, as
// the engine's workers do; net/http the Client the queue scenario uses
// (newAPIClient: http.DefaultTransport's settings without a proxy, each
// request bounded by Client.Timeout), its Transport keeping one connection
// per worker (MaxConnsPerHost = MaxIdleConnsPerHost = workers), the request
// body and the answer in reused buffers. Workers: benchConcurrency
// goroutines (RunParallel with SetParallelism), loadtest's default
// --concurrency.
//
// The server is an httptest server on 127.0.0.1 in a child process (this
// test binary started again with fluxOrderBenchServer set, see TestMain):
// the client's CPU per request, cpu-ns/req, is then this process's
// getrusage user+system time over the run divided by the requests, with no
// server work in it. srv-cpu-ns/req is the child's, to show the server
// costs both clients the same; conns is the connections the server
// accepted during the run. B/op and allocs/op are this process's, i.e. the
// client's. Client and server share the machine's cores, so ns/op (wall
// time per request over all workers) is bounded by both.
//
//	go test ./loadtest/ -run '^$' -bench Client -benchtime 2s -count 5
func BenchmarkClient(b *testing.B) {
	base, stats := startBenchServer(b)
	tg, err := parseTarget(base, "")
	if err != nil {
		b.Fatal(err)
	}
	const seat = 17
	var buyer atomic.Int64
	par := (benchConcurrency + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0)

	b.Run("h1", func(b *testing.B) {
		build := newRequestBuilder(tg, "", nil) // keyless: the sold seat is refused from the pod's memory
		measureClient(b, stats, func() {
			b.SetParallelism(par)
			b.RunParallel(func(pb *testing.PB) {
				var conn *h1conn
				defer func() {
					if conn != nil {
						conn.close()
					}
				}()
				req, body := make([]byte, 0, 512), make([]byte, 0, 1024)
				for pb.Next() {
					if conn == nil {
						c, err := dialH1(context.Background(), tg, nil, DefaultTimeout)
						if err != nil {
							b.Error(err)
							return
						}
						conn = c
					}
					req = build.appendRequest(req[:0], 0, seat, buyer.Add(1))
					status, ans, keep, err := conn.roundTrip(req, time.Now().Add(DefaultTimeout), body)
					body = ans[:0]
					if err != nil || !keep || Classify(status, ans) != TicketSold {
						b.Errorf("expected a kept 409 ticket_sold, got %d %q keep=%v err=%v", status, ans, keep, err)
						return
					}
				}
			})
		})
	})

	b.Run("net/http", func(b *testing.B) {
		url := base + "/v1/tickets/" + strconv.Itoa(seat) + "/purchase"
		header := http.Header{"Content-Type": {"application/json"}, "User-Agent": {"flux-order-loadtest"}}
		measureClient(b, stats, func() {
			c := newAPIClient(tg, nil, DefaultTimeout).c // as runQueue and runHolds set it up
			tr := c.Transport.(*http.Transport)
			tr.MaxConnsPerHost, tr.MaxIdleConnsPerHost = benchConcurrency, benchConcurrency
			defer tr.CloseIdleConnections()
			b.SetParallelism(par)
			b.RunParallel(func(pb *testing.PB) {
				reqBody, ans := make([]byte, 0, 64), make([]byte, 0, 1024)
				var rd bytes.Reader
				for pb.Next() {
					reqBody = strconv.AppendInt(append(reqBody[:0], bodyHead...), buyer.Add(1), 10)
					reqBody = append(reqBody, bodyTail...)
					rd.Reset(reqBody)
					req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, &rd)
					if err != nil {
						b.Error(err)
						return
					}
					req.Header = header // read only by the transport
					resp, err := c.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					ans, err = readInto(resp.Body, ans[:0])
					_ = resp.Body.Close()
					if err != nil || Classify(resp.StatusCode, ans) != TicketSold {
						b.Errorf("expected a 409 ticket_sold, got %d %q err=%v", resp.StatusCode, ans, err)
						return
					}
				}
			})
		})
	})
}

// benchConcurrency is the workers of BenchmarkClient: loadtest's default
// --concurrency.
const benchConcurrency = 10

// readInto reads r to its end into dst, reusing dst's array.
func readInto(r io.Reader, dst []byte) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// measureClient runs the timed loop and reports the client's and the
// server's CPU per request and the connections the server accepted.
func measureClient(b *testing.B, stats func() (time.Duration, int64), run func()) {
	b.ReportAllocs()
	srv0, conns0 := stats()
	cpu0 := cpuTime()
	b.ResetTimer()
	run()
	b.StopTimer()
	cpu := cpuTime() - cpu0
	srv1, conns1 := stats()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/req")
	b.ReportMetric(float64((srv1-srv0).Nanoseconds())/float64(b.N), "srv-cpu-ns/req")
	b.ReportMetric(float64(conns1-conns0), "conns")
}

// fluxOrderBenchServer, set in the environment, makes this test binary the
// server of BenchmarkClient instead of running tests (see TestMain).
const fluxOrderBenchServer = "FLUX_ORDER_BENCH_SERVER"

// soldAnswer is the purchase API's answer for a seat already sold.
var soldAnswer = []byte(`{"type":"https://fluxorder.io/problems/ticket_sold","title":"Ticket sold","status":409,"detail":"this ticket is already sold","code":"ticket_sold"}` + "\n")

// serveBench is the child process of BenchmarkClient: an httptest server
// on 127.0.0.1 answering every purchase with soldAnswer (headers built
// once, the request body drained), and GET /stats with its own CPU time in
// ns and the connections it accepted. It prints its URL on stdout and
// exits when stdin closes (the benchmark ended or died).
func serveBench() {
	contentType := []string{"application/problem+json"}
	contentLength := []string{strconv.Itoa(len(soldAnswer))}
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stats" {
			fmt.Fprintf(w, "%d %d", cpuTime().Nanoseconds(), conns.Load())
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = contentType
		h["Content-Length"] = contentLength
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write(soldAnswer)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	fmt.Println(srv.URL)
	_, _ = io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

// startBenchServer starts serveBench in a child process and returns its URL
// and a function reading its CPU time and accepted connections.
func startBenchServer(b *testing.B) (string, func() (time.Duration, int64)) {
	_, stdout := testservers.StartSelf(b, fluxOrderBenchServer+"=1")
	line, err := stdout.ReadString('\n')
	if err != nil {
		b.Fatalf("the bench server did not print its URL: %v", err)
	}
	base := strings.TrimSpace(line)
	tr := &http.Transport{}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return base, func() (time.Duration, int64) {
		resp, err := client.Get(base + "/stats")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var cpu, conns int64
		if _, err := fmt.Fscan(resp.Body, &cpu, &conns); err != nil {
			b.Fatal(err)
		}
		return time.Duration(cpu), conns
	}
}
