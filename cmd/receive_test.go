package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/delivery"
)

func TestReceiveCommand_VerifiesPrintsOnceCountsDuplicatesAndBadSignatures(t *testing.T) {
	t.Setenv("FLUX_ORDER_SIGNING_SECRET", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD "+testSecret)
	r := startReceive(t, t.Context(), "--count", "2")
	post := func(id, body, sig string) int { return r.post(t, "/hooks", id, body, sig) }
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the receiver listening", func() error {
		if code := post("a", `{"type":"order.confirmed","n":1}`, ""); code != http.StatusNoContent {
			return fmt.Errorf("first delivery answered %d", code)
		}
		return nil
	})
	if code := post("a", `{"type":"order.confirmed","n":1}`, ""); code != http.StatusNoContent {
		t.Fatalf("a duplicate must be acknowledged, got %d", code)
	}
	if code := post("b", `{"n":2}`, "v1,AAAA"); code != http.StatusUnauthorized {
		t.Fatalf("a bad signature must get 401, got %d", code)
	}
	if code := post("b", `{"type":"order.confirmed","n":2}`, ""); code != http.StatusNoContent {
		t.Fatalf("second event answered %d", code)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("receive did not exit after --count events")
	}
	if got := r.out.String(); got != "{\"type\":\"order.confirmed\",\"n\":1}\n{\"type\":\"order.confirmed\",\"n\":2}\n" {
		t.Fatalf("stdout %q: want each event once, one a line", got)
	}
	if !strings.Contains(r.errOut.String(), "received 2 events, 1 duplicates, 1 bad signatures") {
		t.Fatalf("stderr %q: want the counts", r.errOut.String())
	}
}

// --fail-for plays an outage from the first delivery, and GET /stats
// reports the lag of the order events from their timestamp to the 2xx.
func TestReceiveCommand_FailForThenStatsWithLag(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r := startReceive(t, ctx, "--signing-secret", testSecret, "--fail-for", "400ms")
	purchasedAt := time.Now().Add(-2 * time.Second).UTC()
	body := fmt.Sprintf(`{"type":"order.confirmed","timestamp":%q,"sequence":1,"data":{}}`, purchasedAt.Format(time.RFC3339Nano))
	post := func() int { return r.post(t, "/", "o-1", body, "") }
	began := time.Now()
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the receiver failing", func() error {
		if code := post(); code != http.StatusServiceUnavailable {
			return fmt.Errorf("first delivery answered %d, want 503", code)
		}
		return nil
	})
	testservers.Eventually(t, 5*time.Second, 50*time.Millisecond, "the receiver recovered", func() error {
		if code := post(); code != http.StatusNoContent {
			return fmt.Errorf("delivery answered %d, want 204", code)
		}
		return nil
	})
	if time.Since(began) < 400*time.Millisecond {
		t.Fatalf("recovered after %s, before --fail-for ended", time.Since(began))
	}
	resp, err := http.Get("http://" + r.addr + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Events, Orders, Refused int
		RecoveredAt, LastKept   time.Time
		Lag                     delivery.Percentiles `json:"lagSeconds"`
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.Events != 1 || st.Orders != 1 || st.Refused < 1 || st.RecoveredAt.IsZero() || st.LastKept.Before(st.RecoveredAt) {
		t.Fatalf("stats %+v: want 1 order kept after the recovery, refused before it", st)
	}
	// Kept at least 2.4 s after its purchasedAt (2 s old + the outage).
	if st.Lag.N != 1 || st.Lag.P99 < 2.4 || st.Lag.P99 > 30 {
		t.Fatalf("lag %+v: want one order about 2.4 s+ late", st.Lag)
	}
	cancel()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.errOut.String(), "1 orders, ") {
		t.Fatalf("stderr %q: want the report on exit", r.errOut.String())
	}
}

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// receiving is a `flux-order receive` running in the test.
type receiving struct {
	addr        string
	out, errOut bytes.Buffer
	done        chan error
}

// startReceive runs `flux-order receive --listen <free port> args...` until
// ctx ends (or the command exits by itself).
func startReceive(t *testing.T, ctx context.Context, args ...string) *receiving {
	t.Helper()
	port, err := testservers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &receiving{addr: fmt.Sprintf("127.0.0.1:%d", port), done: make(chan error, 1)}
	root := newRootCommand()
	root.SetArgs(append([]string{"receive", "--listen", r.addr}, args...))
	root.SetOut(&r.out)
	root.SetErr(&r.errOut)
	go func() { r.done <- root.ExecuteContext(ctx) }()
	return r
}

// post delivers body as event id to path, signed with testSecret unless
// sig is given, and returns the status (0 when nothing answered).
func (r *receiving) post(t *testing.T, path, id, body, sig string) int {
	t.Helper()
	ts := time.Now().Unix()
	if sig == "" {
		var err error
		if sig, err = delivery.Sign([]string{testSecret}, id, ts, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+r.addr+path, strings.NewReader(body))
	req.Header.Set(delivery.HeaderID, id)
	req.Header.Set(delivery.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(delivery.HeaderSignature, sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// countingWriter counts the writes it gets and keeps what they wrote.
type countingWriter struct {
	mu     sync.Mutex
	writes int
	buf    bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.buf.Write(p)
}

func (w *countingWriter) lines() (lines, writes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Count(w.buf.Bytes(), []byte("\n")), w.writes
}

// Events are printed through a buffer: a burst of deliveries reaches the
// output in a few writes, not one each, and still within printFlush of
// arriving (no --count, no exit to flush it).
func TestReceiveCommand_PrintsABurstInFewWrites(t *testing.T) {
	port, err := testservers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &receiving{addr: fmt.Sprintf("127.0.0.1:%d", port), done: make(chan error, 1)}
	out := &countingWriter{}
	root := newRootCommand()
	root.SetArgs([]string{"receive", "--listen", r.addr, "--signing-secret", testSecret})
	root.SetOut(out)
	root.SetErr(&r.errOut)
	ctx, cancel := context.WithCancel(t.Context())
	defer func() { cancel(); <-r.done }()
	go func() { r.done <- root.ExecuteContext(ctx) }()
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the receiver listening", func() error {
		if code := r.post(t, "/", "e-0", `{"type":"order.confirmed","n":0}`, ""); code != http.StatusNoContent {
			return fmt.Errorf("first delivery answered %d", code)
		}
		return nil
	})
	const burst = 200
	for i := 1; i < burst; i++ {
		if code := r.post(t, "/", fmt.Sprintf("e-%d", i), fmt.Sprintf(`{"type":"order.confirmed","n":%d}`, i), ""); code != http.StatusNoContent {
			t.Fatalf("delivery %d answered %d", i, code)
		}
	}
	testservers.Eventually(t, 2*time.Second, 10*time.Millisecond, "every event printed while the receiver runs", func() error {
		if n, _ := out.lines(); n != burst {
			return fmt.Errorf("%d of %d events printed", n, burst)
		}
		return nil
	})
	if _, writes := out.lines(); writes > burst/4 {
		t.Fatalf("%d events printed in %d writes: want them buffered (a few writes per 100 ms)", burst, writes)
	}
}
