package purchase_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
)

// fluxOrderStreamClient set makes the test binary the stream client of
// BenchmarkEvents_IdleStreamMemory instead of running tests (see TestMain).
const fluxOrderStreamClient = "FLUX_ORDER_STREAM_CLIENT"

// BenchmarkEvents_IdleStreamMemory measures what an idle seat stream costs
// its pod (issue 17: at most 64 KiB for a sale of 100,000 seats): one pod,
// 100,000 seats, and 10,000 streams opened by a child process (this test
// binary again, with fluxOrderStreamClient set), each of which reads its
// sale and snapshot events and then only heartbeats. The client is in
// another process, so what grows here is the pod's alone. After 100
// streams (the hub and its seat states exist), 10,000 more are opened;
// per stream:
//   - B/stream: the Go memory (heap in use + goroutine stacks, after a GC),
//   - stack-B/stream: the goroutine stacks among it,
//   - rss-B/stream: the process's resident memory (/proc/self/status; only
//     the first run of a process: memory the Go runtime keeps is reused).
//
// Kernel socket buffers are outside all three. b.N is ignored (one
// measurement).
//
//	go test ./purchase/ -run '^$' -bench IdleStreamMemory -benchtime 1x
func BenchmarkEvents_IdleStreamMemory(b *testing.B) { idleStreamMemory(b, false) }

// BenchmarkEvents_IdleGzipStreamMemory is the same with streams that
// accept gzip, as every browser's do (issue 17): run it on its own, as the
// resident memory is only measured right in a fresh process.
//
//	go test ./purchase/ -run '^$' -bench IdleGzipStreamMemory -benchtime 1x
func BenchmarkEvents_IdleGzipStreamMemory(b *testing.B) { idleStreamMemory(b, true) }

func idleStreamMemory(b *testing.B, gzipped bool) {
	const seats, warm, streams = 100_000, 100, 10_000
	s := newTestSale(b, seats, func(c *purchase.Config) { c.MaxStreams = warm + streams })
	u, err := url.Parse(s.Pods[0].URL)
	if err != nil {
		b.Fatal(err)
	}
	client := u.Host
	if gzipped {
		client += ";gzip"
	}
	stdin, stdout := testservers.StartSelf(b, fluxOrderStreamClient+"="+client)
	answers := bufio.NewScanner(stdout)
	open := func(n int) {
		if _, err := fmt.Fprintln(stdin, n); err != nil {
			b.Fatal(err)
		}
		if !answers.Scan() || answers.Text() != fmt.Sprint("ready ", n) {
			b.Fatalf("the stream client opened no %d streams: %q %v", n, answers.Text(), answers.Err())
		}
	}
	open(warm)
	before := podMemory(b)
	b.ResetTimer()
	open(streams)
	b.StopTimer()
	after := podMemory(b)
	b.ReportMetric(float64(after.heap+after.stacks-before.heap-before.stacks)/streams, "B/stream")
	b.ReportMetric(float64(after.stacks-before.stacks)/streams, "stack-B/stream")
	b.ReportMetric(float64(after.rss-before.rss)/streams, "rss-B/stream")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
}

// memory is this process's Go memory in use (after a GC) and its resident
// set, in bytes.
type memory struct{ heap, stacks, rss int64 }

func podMemory(b *testing.B) (m memory) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			m.rss = kb << 10
		}
	}
	m.heap, m.stacks = int64(ms.HeapInuse), int64(ms.StackInuse)
	return m
}

// streamClient is the child of BenchmarkEvents_IdleStreamMemory: for each
// number n read from stdin it opens n more seat streams to host, waits
// until each has read its snapshot, and prints "ready n". Every stream
// then reads (and drops) what comes: heartbeats. It exits when stdin
// closes.
func streamClient(host string) {
	host, gzipped := strings.CutSuffix(host, ";gzip")
	in := bufio.NewScanner(os.Stdin)
	var conns []net.Conn
	for in.Scan() {
		n, err := strconv.Atoi(in.Text())
		if err != nil {
			fmt.Fprintln(os.Stderr, "stream client:", err)
			os.Exit(1)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		sem := make(chan struct{}, 32)
		for range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				c, err := openStream(host, gzipped)
				if err != nil {
					fmt.Fprintln(os.Stderr, "stream client:", err)
					os.Exit(1)
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			})
		}
		wg.Wait()
		fmt.Println("ready", n)
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

// openStream opens GET /v1/events (accepting gzip when gzipped) and reads
// up to the end of its snapshot event; a goroutine then drops whatever
// else comes.
func openStream(host string, gzipped bool) (net.Conn, error) {
	c, err := net.Dial("tcp", host)
	if err != nil {
		return nil, err
	}
	accept := ""
	if gzipped {
		accept = "Accept-Encoding: gzip\r\n"
	}
	if _, err := fmt.Fprintf(c, "GET /v1/events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n%s\r\n", host, accept); err != nil {
		return nil, err
	}
	r := bufio.NewReaderSize(c, 64<<10)
	if gzipped {
		// The answer's head, then its chunked, gzip'd body.
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return nil, fmt.Errorf("read the answer's head: %w", err)
			}
			if line == "\r\n" {
				break
			}
		}
		zr, err := gzip.NewReader(httputil.NewChunkedReader(r))
		if err != nil {
			return nil, fmt.Errorf("the stream is not gzip'd: %w", err)
		}
		r = bufio.NewReaderSize(zr, 64<<10)
	}
	snapshot, data := false, false
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return nil, fmt.Errorf("read the stream: %w", err)
		}
		snapshot = snapshot || bytes.HasPrefix(line, []byte("event: snapshot"))
		data = data || snapshot && bytes.HasPrefix(line, []byte("data: "))
		if data && err == nil {
			break // the end of the snapshot's line (or of a chunk of it)
		}
	}
	go func() { _, _ = io.Copy(io.Discard, r) }()
	return c, nil
}
