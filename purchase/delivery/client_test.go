package delivery

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// hookTo loads a webhooks file naming one webhook to url, as the pod
// does, and returns it ready to post to.
func hookTo(t *testing.T, url, caPEM string, timeout time.Duration, conns *connSet) *webhook {
	t.Helper()
	raw, err := json.Marshal(salesv1alpha1.WebhooksFile{Webhooks: []salesv1alpha1.ResolvedWebhook{{
		Name: "w", URL: url, SigningSecrets: []string{testSecret}, CA: caPEM,
		Events: []salesv1alpha1.WebhookEvent{"order.confirmed"}, InsecureHTTP: strings.HasPrefix(url, "http:"),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "webhooks.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := loadSettings(path, timeout, 64, conns)
	if err != nil {
		t.Fatal(err)
	}
	h := s.hooks["w"]
	if h.problem != "" {
		t.Fatalf("webhook to %s: %s", url, h.problem)
	}
	return h
}

var testArgs = DeliveryArgs{Webhook: "w", ID: "evt_1", Type: "order.confirmed", Body: `{"type":"order.confirmed","sequence":1}`}

func postOnce(t *testing.T, h *webhook) (string, error) {
	t.Helper()
	return (&Deliverer{}).post(context.Background(), h, testArgs)
}

func caOf(srv *httptest.Server) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
}

func TestPost_SignedPOST_VerifiedByTheStandardWebhooksLibrary(t *testing.T) {
	var got struct {
		sync.Mutex
		r    *http.Request
		body []byte
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got.Lock()
		got.r, got.body = r, body
		got.Unlock()
	}))
	defer srv.Close()
	h := hookTo(t, srv.URL+"/hooks/in?x=1", "", time.Second, nil)
	if outcome, err := postOnce(t, h); err != nil {
		t.Fatalf("post: %s %v", outcome, err)
	}
	got.Lock()
	defer got.Unlock()
	r := got.r
	if r.Method != http.MethodPost || r.URL.RequestURI() != "/hooks/in?x=1" || string(got.body) != testArgs.Body {
		t.Fatalf("got %s %s %q", r.Method, r.URL.RequestURI(), got.body)
	}
	if ct, ua := r.Header.Get("Content-Type"), r.Header.Get("User-Agent"); ct != "application/json" || ua != "flux-order-webhooks/1" {
		t.Fatalf("Content-Type %q, User-Agent %q", ct, ua)
	}
	if r.Header.Get(HeaderID) != testArgs.ID {
		t.Fatalf("webhook-id %q", r.Header.Get(HeaderID))
	}
	v, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(got.body, r.Header); err != nil {
		t.Fatalf("the reference library refuses our delivery: %v", err)
	}
}

func TestPost_Redirect_FailedAttempt_TargetNotRequested(t *testing.T) {
	var target atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/target", func(http.ResponseWriter, *http.Request) { target.Add(1) })
	mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/target", http.StatusFound) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	outcome, err := postOnce(t, hookTo(t, srv.URL+"/hook", "", time.Second, nil))
	if err == nil || outcome != "3xx" {
		t.Fatalf("a 302 must be a failed attempt with outcome 3xx: %q, %v", outcome, err)
	}
	if n := target.Load(); n != 0 {
		t.Fatalf("the redirect's target was requested %d times", n)
	}
}

func TestPost_SlowerThanTheAttemptTimeout_OutcomeTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	h := hookTo(t, srv.URL, "", 200*time.Millisecond, nil)
	start := time.Now()
	outcome, err := postOnce(t, h)
	if outcome != "timeout" || err == nil {
		t.Fatalf("want outcome timeout, got %q, %v", outcome, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the attempt took %s, its timeout is 200ms", took)
	}

	// A context's deadline earlier than the timeout ends it first.
	h = hookTo(t, srv.URL, "", 10*time.Second, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	outcome, err = (&Deliverer{}).post(ctx, h, testArgs)
	if outcome != "timeout" || err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("want outcome timeout at the context's deadline, got %q, %v after %s", outcome, err, time.Since(start))
	}
	// A context already cancelled starts nothing.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if outcome, err := (&Deliverer{}).post(done, h, testArgs); outcome != "error" || err == nil {
		t.Fatalf("a cancelled context: want outcome error, got %q, %v", outcome, err)
	}
}

func TestPost_TLS_DeliveredWithItsCA_RefusedWithoutOrForAnotherName(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	if outcome, err := postOnce(t, hookTo(t, srv.URL, caOf(srv), time.Second, nil)); err != nil {
		t.Fatalf("with the server's CA: %q, %v", outcome, err)
	}
	if outcome, err := postOnce(t, hookTo(t, srv.URL, "", time.Second, nil)); err == nil || outcome != "error" {
		t.Fatalf("without its CA (the system roots): want a failed attempt, got %q, %v", outcome, err)
	}
	// httptest's certificate names 127.0.0.1 and example.com, not localhost:
	// the name is verified, not only the chain.
	other := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	var wrongName x509.HostnameError
	if outcome, err := postOnce(t, hookTo(t, other, caOf(srv), time.Second, nil)); !errors.As(err, &wrongName) {
		t.Fatalf("a certificate for another name must be refused: %q, %v", outcome, err)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("the receiver got %d requests, want the one with its CA", n)
	}
	if _, err := newClient(srv.URL, "not a PEM", time.Second, 64, nil); err == nil {
		t.Fatal("a CA bundle with no certificate must be a problem")
	}
}

func TestPost_AnswerBodyOver64KiB_StatusDecides(t *testing.T) {
	code := atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(code.Load()))
		_, _ = w.Write(make([]byte, 1<<20))
	}))
	defer srv.Close()
	h := hookTo(t, srv.URL, "", time.Second, nil)
	code.Store(200)
	if outcome, err := postOnce(t, h); err != nil {
		t.Fatalf("a 200 with a 1 MiB body is delivered: %q, %v", outcome, err)
	}
	code.Store(503)
	if outcome, err := postOnce(t, h); outcome != "5xx" || err == nil {
		t.Fatalf("a 503 with a 1 MiB body: want 5xx, got %q, %v", outcome, err)
	}
	code.Store(200)
	if outcome, err := postOnce(t, h); err != nil {
		t.Fatalf("after a closed connection, the next attempt is delivered: %q, %v", outcome, err)
	}
}

// A server that closes kept-alive connections quickly: the next POST,
// sent on the connection it closed, is sent again on a new one.
func TestPost_IdleConnectionClosedByTheServer_Delivered(t *testing.T) {
	var hits atomic.Int32
	srv, allClosed := idleClosingServer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	h := hookTo(t, srv.URL, "", time.Second, nil)
	for i := range 3 {
		if outcome, err := postOnce(t, h); err != nil {
			t.Fatalf("post %d: %q, %v", i, outcome, err)
		}
		allClosed()
	}
	if n := hits.Load(); n != 3 {
		t.Fatalf("the receiver got %d requests, want 3", n)
	}
}

// idleClosingServer serves handler and closes a connection idle for 50 ms;
// allClosed waits until the server has closed every connection it had.
func idleClosingServer(t *testing.T, handler http.Handler) (srv *httptest.Server, allClosed func()) {
	t.Helper()
	var open atomic.Int64
	srv = httptest.NewUnstartedServer(handler)
	srv.Config.IdleTimeout = 50 * time.Millisecond
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, func() {
		t.Helper()
		testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, "the server closed its idle connections", func() error {
			if n := open.Load(); n != 0 {
				return fmt.Errorf("%d open", n)
			}
			return nil
		})
	}
}

// Several kept-alive connections the server closed in a lull: attempts
// that find them succeed (the retry dials a fresh connection, not the next
// closed one).
func TestPost_ManyIdleConnectionsClosedByTheServer_Delivered(t *testing.T) {
	var hits atomic.Int32
	arrived := make(chan struct{}, 8)
	var gate atomic.Pointer[chan struct{}]
	srv, allClosed := idleClosingServer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		hits.Add(1)
		g := *gate.Load()
		arrived <- struct{}{}
		<-g
	}))
	h := hookTo(t, srv.URL, "", 2*time.Second, nil)
	post4 := func() []error {
		g := make(chan struct{})
		gate.Store(&g)
		errs := make([]error, 4)
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() { _, errs[i] = postOnce(t, h) })
		}
		// All four in flight at once: four connections. A post that
		// failed never arrives: its error is reported below.
		timeout := time.After(5 * time.Second)
		for n := 0; n < 4; n++ {
			select {
			case <-arrived:
			case <-timeout:
				n = 4
			}
		}
		close(g)
		wg.Wait()
		return errs
	}
	for round := range 2 {
		for i, err := range post4() {
			if err != nil {
				t.Fatalf("round %d, post %d after the server closed the idle connections: %v", round, i, err)
			}
		}
		allClosed() // the server closes all four
	}
	if n := hits.Load(); n != 8 {
		t.Fatalf("the receiver got %d requests, want 8", n)
	}
}

// A TLS endpoint that accepts the connection and never answers the
// ClientHello: the attempt ends at its timeout, as "timeout".
func TestPost_TLSHandshakeNeverAnswered_OutcomeTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	}()
	h := hookTo(t, "https://"+ln.Addr().String()+"/in", "", 300*time.Millisecond, nil)
	start := time.Now()
	type result struct {
		outcome string
		err     error
	}
	done := make(chan result, 1)
	go func() { o, err := postOnce(t, h); done <- result{o, err} }()
	select {
	case r := <-done:
		if r.err == nil || r.outcome != "timeout" {
			t.Fatalf("want a failed attempt with outcome timeout, got %q, %v", r.outcome, r.err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the attempt took %v, want about its 300ms timeout", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an attempt whose TLS handshake is never answered did not end within 5s (timeout 300ms)")
	}
}

// An answer whose headers exceed fasthttp's default 4 KiB buffer (a
// gateway's cookies): the status decides, and the error of a failed one
// names no header value.
func TestPost_LargeAnswerHeaders(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusNoContent)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Set-Cookie", "session="+strings.Repeat("s3cr3t", 1000)) // 6 KB
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	h := hookTo(t, srv.URL, "", time.Second, nil)
	if outcome, err := postOnce(t, h); err != nil {
		t.Fatalf("a 204 with 6 KB of headers: %q, %v", outcome, err)
	}
	status.Store(http.StatusServiceUnavailable)
	if outcome, err := postOnce(t, h); err == nil || outcome != "5xx" || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("a 503 with 6 KB of headers: want outcome 5xx and no header value in the error, got %q, %v", outcome, err)
	}
}

// The pod's stop (connSet.close) ends an attempt in flight, and no new
// attempt connects afterwards.
func TestPost_PodStops_AttemptInFlightEnds(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		arrived <- struct{}{}
		<-release
	}))
	defer srv.Close()
	defer close(release)
	conns := newConnSet()
	h := hookTo(t, srv.URL, "", 10*time.Second, conns)
	type result struct {
		outcome string
		err     error
	}
	done := make(chan result, 1)
	go func() { o, err := postOnce(t, h); done <- result{o, err} }()
	<-arrived
	conns.close()
	select {
	case r := <-done:
		if r.err == nil || r.outcome != "error" {
			t.Fatalf("want a failed attempt with outcome error, got %q, %v", r.outcome, r.err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the attempt in flight did not end when the pod stopped")
	}
	if outcome, err := postOnce(t, h); err == nil || outcome != "error" {
		t.Fatalf("after the stop, a new attempt must fail: %q, %v", outcome, err)
	}
}

// proxy is an HTTP proxy that tunnels every CONNECT to target, whatever
// the host asked for, and records what was asked.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	asked  []string
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.asked = append(p.asked, req.Method+" "+req.Host)
	p.mu.Unlock()
	if req.Method != http.MethodConnect {
		_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() { _, _ = io.Copy(up, br); _ = up.(*net.TCPConn).CloseWrite() }()
	_, _ = io.Copy(c, up)
}

func (p *proxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.asked...)
}

// HTTP_PROXY and HTTPS_PROXY are honoured as net/http's DefaultTransport
// did (not for loopback addresses, as there: the endpoints are named
// receiver.test and example.com, which only the proxy reaches).
func TestPost_ProxyFromTheEnvironment(t *testing.T) {
	var hits atomic.Int32
	count := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) })
	plain := httptest.NewServer(count)
	defer plain.Close()
	secure := httptest.NewTLSServer(count)
	defer secure.Close()

	// As net/http: an http:// endpoint's request goes to the proxy in
	// absolute form, with the proxy URL's credentials; this proxy, as
	// Squid's default configuration, refuses CONNECT to port 8080.
	t.Run("http", func(t *testing.T) {
		p := startForwardProxy(t, plain.Listener.Addr().String(), false, false)
		t.Setenv("HTTP_PROXY", "http://flux:p%40ss@"+p.addr())
		t.Setenv("HTTPS_PROXY", "")
		t.Setenv("NO_PROXY", "")
		before := hits.Load()
		h := hookTo(t, "http://receiver.test:8080/hook?x=1", "", 2*time.Second, nil)
		for i := range 2 { // the second on the kept-alive connection
			if outcome, err := postOnce(t, h); err != nil {
				t.Fatalf("post %d through the proxy: %q, %v", i, outcome, err)
			}
		}
		want := "POST http://receiver.test:8080/hook?x=1 Basic Zmx1eDpwQHNz" // flux:p@ss
		if got := p.requests(); len(got) != 2 || got[0] != want || got[1] != want || hits.Load() != before+2 {
			t.Fatalf("the proxy saw %q (want twice %q), the receiver %d requests", got, want, hits.Load()-before)
		}
	})
	t.Run("https", func(t *testing.T) {
		p := startProxy(t, secure.Listener.Addr().String())
		t.Setenv("HTTP_PROXY", "")
		t.Setenv("HTTPS_PROXY", p.ln.Addr().String())
		t.Setenv("NO_PROXY", "")
		before := hits.Load()
		// The TLS session is the endpoint's, through the tunnel: its
		// certificate is verified for example.com.
		if outcome, err := postOnce(t, hookTo(t, "https://example.com/hook", caOf(secure), 2*time.Second, nil)); err != nil {
			t.Fatalf("through the proxy: %q, %v", outcome, err)
		}
		if got := p.requests(); len(got) != 1 || got[0] != "CONNECT example.com:443" || hits.Load() != before+1 {
			t.Fatalf("the proxy saw %v, the receiver %d requests", got, hits.Load()-before)
		}
	})
	t.Run("no_proxy", func(t *testing.T) {
		p := startProxy(t, plain.Listener.Addr().String())
		t.Setenv("HTTP_PROXY", "http://"+p.ln.Addr().String())
		t.Setenv("NO_PROXY", "receiver.test")
		// Direct: receiver.test does not resolve, so the attempt fails.
		if outcome, err := postOnce(t, hookTo(t, "http://receiver.test:8080/hook", "", 2*time.Second, nil)); err == nil {
			t.Fatalf("receiver.test reached without the proxy: %q", outcome)
		}
		if got := p.requests(); len(got) != 0 {
			t.Fatalf("NO_PROXY names the host, yet the proxy saw %v", got)
		}
	})
}

// An attempt's error never names the endpoint: its URL is a Secret's value
// that the sale's author may not read, and the error reaches
// status.delivery, the operator's event, River's job and the logs.
func TestPost_ErrorsNeverNameTheEndpoint(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	_ = l.Close()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	for _, c := range []struct{ name, url, host string }{
		{"connection refused", "http://" + closed + "/s3cr3t-path", closed},
		{"a name that does not resolve", "http://s3cr3t-host.invalid:8080/x", "s3cr3t-host"},
		{"a certificate for another name", strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/x", "localhost"},
		// By name: the dial's error carries the address the name resolved
		// to, and the certificate's own names (httptest's: example.com).
		{"refused, by name", "http://" + strings.Replace(closed, "127.0.0.1", "localhost", 1) + "/x", "127.0.0.1"},
		{"the certificate's names", strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/x", "example.com"},
	} {
		_, err := postOnce(t, hookTo(t, c.url, caOf(srv), time.Second, nil))
		if err == nil {
			t.Errorf("%s: delivered", c.name)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, c.host) || strings.Contains(msg, "s3cr3t") || !strings.Contains(msg, "POST w:") {
			t.Errorf("%s: the error names the endpoint: %s", c.name, msg)
		} else {
			t.Logf("%s: %s", c.name, msg)
		}
	}
}

func TestHideEndpoint_WholeNamesOnly(t *testing.T) {
	for _, c := range []struct{ url, in, want string }{
		{"https://hooks.example.com/x", "lookup hooks.example.com: no such host", "lookup <host>: no such host"},
		{"https://hooks.example.com/x", "dial tcp hooks.example.com:443: refused", "dial tcp <endpoint>: refused"},
		{"https://a.example/x", "x509: certificate is valid for b.a.example, not a.example.", "x509: certificate is valid for b.a.example, not <host>."},
		{"http://orders:8080/x", "POST orders: dial tcp orders:8080: refused", "POST <host>: dial tcp <endpoint>: refused"},
		{"https://[::1]:8443/x", "dial tcp [::1]:8443: refused", "dial tcp <endpoint>: refused"},
		{"https://h.example/p?q", "Post \"https://h.example/p?q\": EOF", "Post \"<endpoint>\": EOF"},
	} {
		if got := hideEndpoint(errors.New(c.in), c.url).Error(); got != c.want {
			t.Errorf("%s in %q: got %q, want %q", c.url, c.in, got, c.want)
		}
	}
	inner := fmt.Errorf("dial: %w", io.EOF)
	if err := hideEndpoint(inner, "https://h.example/"); !errors.Is(err, io.EOF) {
		t.Errorf("the original is no longer seen through it: %v", err)
	}
}
