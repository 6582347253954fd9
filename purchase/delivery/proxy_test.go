package delivery

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// forwardProxy is an HTTP forward proxy: it forwards requests in absolute
// form to target, and tunnels CONNECT to target only if tunnel is set
// (else it refuses it, as Squid's default configuration does for ports
// other than 443). Either way target is reached whatever host was asked
// for. It records "METHOD request-target [Proxy-Authorization] [tls]" per
// request.
type forwardProxy struct {
	srv    *httptest.Server
	target string
	tunnel bool
	fwd    *httputil.ReverseProxy
	mu     sync.Mutex
	seen   []string
}

func startForwardProxy(t *testing.T, target string, tunnel, withTLS bool) *forwardProxy {
	t.Helper()
	p := &forwardProxy{target: target, tunnel: tunnel}
	p.fwd = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The Host header stays the endpoint's, as the client sent it.
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", target
		},
		Transport: &http.Transport{}, // no proxy of its own
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	p.srv = httptest.NewUnstartedServer(p)
	// A refused TLS handshake (the untrusted proxy) is logged otherwise.
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if withTLS {
		p.srv.StartTLS()
	} else {
		p.srv.Start()
	}
	t.Cleanup(p.srv.Close)
	return p
}

func (p *forwardProxy) addr() string { return p.srv.Listener.Addr().String() }

func (p *forwardProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	line := r.Method + " " + r.RequestURI
	if a := r.Header.Get("Proxy-Authorization"); a != "" {
		line += " " + a
	}
	if r.TLS != nil {
		line += " tls"
	}
	p.mu.Lock()
	p.seen = append(p.seen, line)
	p.mu.Unlock()
	switch {
	case r.Method == http.MethodConnect && p.tunnel:
		p.tunnelTo(w)
	case r.Method == http.MethodConnect:
		http.Error(w, "CONNECT to this port is not allowed", http.StatusForbidden)
	case !r.URL.IsAbs():
		http.Error(w, "not a proxy request", http.StatusBadRequest)
	default:
		p.fwd.ServeHTTP(w, r)
	}
}

func (p *forwardProxy) tunnelTo(w http.ResponseWriter) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer up.Close()
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	go func() { _, _ = io.Copy(up, brw); _ = up.(*net.TCPConn).CloseWrite() }()
	_, _ = io.Copy(c, up)
}

func (p *forwardProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// hostsSeen records the Host and request-target of each delivery an
// endpoint gets.
type hostsSeen struct {
	mu    sync.Mutex
	hosts []string
}

func (h *hostsSeen) ServeHTTP(_ http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hosts = append(h.hosts, r.Host+r.URL.RequestURI())
}

func (h *hostsSeen) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.hosts...)
}

func setProxyEnv(t *testing.T, httpProxy, httpsProxy string) {
	t.Setenv("HTTP_PROXY", httpProxy)
	t.Setenv("HTTPS_PROXY", httpsProxy)
	t.Setenv("NO_PROXY", "")
}

// An https:// proxy URL: the pod speaks TLS to the proxy (its certificate
// verified, as net/http did, against the webhook's CA bundle when it has
// one), then CONNECT for an https:// endpoint or the request in absolute
// form for an http:// one.
func TestPost_HTTPSProxy(t *testing.T) {
	var plainSeen, secureSeen hostsSeen
	plain := httptest.NewServer(&plainSeen)
	defer plain.Close()
	secure := httptest.NewTLSServer(&secureSeen)
	defer secure.Close()

	t.Run("https endpoint through a tunnel", func(t *testing.T) {
		p := startForwardProxy(t, secure.Listener.Addr().String(), true, true)
		setProxyEnv(t, "", "https://"+p.addr())
		// One bundle trusts the proxy and the endpoint (httptest gives
		// both the same certificate, for 127.0.0.1 and example.com).
		h := hookTo(t, "https://example.com/hook", caOf(p.srv)+caOf(secure), 2*time.Second, nil)
		if outcome, err := postOnce(t, h); err != nil {
			t.Fatalf("through the https proxy: %q, %v", outcome, err)
		}
		if got := p.requests(); len(got) != 1 || got[0] != "CONNECT example.com:443 tls" {
			t.Fatalf("the proxy saw %q, want one CONNECT over TLS", got)
		}
		if got := secureSeen.got(); len(got) != 1 || got[0] != "example.com/hook" {
			t.Fatalf("the endpoint saw %q", got)
		}
	})
	t.Run("http endpoint in absolute form", func(t *testing.T) {
		p := startForwardProxy(t, plain.Listener.Addr().String(), false, true)
		setProxyEnv(t, "https://flux:secret@"+p.addr(), "")
		h := hookTo(t, "http://receiver.test:8080/hook", caOf(p.srv), 2*time.Second, nil)
		if outcome, err := postOnce(t, h); err != nil {
			t.Fatalf("through the https proxy: %q, %v", outcome, err)
		}
		if got := p.requests(); len(got) != 1 || got[0] != "POST http://receiver.test:8080/hook Basic Zmx1eDpzZWNyZXQ= tls" {
			t.Fatalf("the proxy saw %q, want the POST in absolute form over TLS with the credentials", got)
		}
		if got := plainSeen.got(); len(got) != 1 || got[0] != "receiver.test:8080/hook" {
			t.Fatalf("the endpoint saw %q", got)
		}
	})
	// A refusal names the status, never the proxy's credentials.
	t.Run("CONNECT refused", func(t *testing.T) {
		p := startForwardProxy(t, secure.Listener.Addr().String(), false, true)
		setProxyEnv(t, "", "https://flux:s3cr3t@"+p.addr())
		h := hookTo(t, "https://example.com/hook", caOf(p.srv), 2*time.Second, nil)
		before := len(secureSeen.got())
		outcome, err := postOnce(t, h)
		if err == nil || outcome != "error" || !strings.Contains(err.Error(), "403") || strings.Contains(err.Error(), "s3cr3t") {
			t.Fatalf("want a failed attempt naming 403 and not the password, got %q, %v", outcome, err)
		}
		if got := p.requests(); len(got) != 1 || got[0] != "CONNECT example.com:443 Basic Zmx1eDpzM2NyM3Q= tls" {
			t.Fatalf("the proxy saw %q, want one CONNECT over TLS with the credentials", got)
		}
		if n := len(secureSeen.got()) - before; n != 0 {
			t.Fatalf("the endpoint got %d deliveries past a refused CONNECT", n)
		}
	})
	t.Run("proxy not trusted", func(t *testing.T) {
		p := startForwardProxy(t, plain.Listener.Addr().String(), false, true)
		setProxyEnv(t, "https://"+p.addr(), "")
		// No CA bundle: the system roots, which do not hold httptest's.
		outcome, err := postOnce(t, hookTo(t, "http://receiver.test:8080/hook", "", 2*time.Second, nil))
		if err == nil || outcome != "error" || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("an https proxy with an unknown certificate: want a failed attempt naming the certificate, got %q, %v", outcome, err)
		}
		if got := p.requests(); len(got) != 0 {
			t.Fatalf("the untrusted proxy got %q", got)
		}
	})
}

// Without a CA bundle an https:// proxy's certificate is verified against
// the system roots, which SSL_CERT_FILE names. Go reads them once per
// process, so the delivery runs in a child process of the test binary.
func TestPost_HTTPSProxy_TrustedBySystemRoots(t *testing.T) {
	if os.Getenv("FLUX_ORDER_TEST_SYSTEM_ROOTS_CHILD") == "1" {
		var seen hostsSeen
		plain := httptest.NewServer(&seen)
		defer plain.Close()
		p := startForwardProxy(t, plain.Listener.Addr().String(), false, true)
		setProxyEnv(t, "https://"+p.addr(), "")
		if outcome, err := postOnce(t, hookTo(t, "http://receiver.test:8080/hook", "", 2*time.Second, nil)); err != nil {
			t.Fatalf("through an https proxy trusted by SSL_CERT_FILE: %q, %v", outcome, err)
		}
		if got := p.requests(); len(got) != 1 || got[0] != "POST http://receiver.test:8080/hook tls" {
			t.Fatalf("the proxy saw %q", got)
		}
		return
	}
	srv := httptest.NewTLSServer(http.NotFoundHandler()) // httptest's one certificate
	pemFile := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(pemFile, []byte(caOf(srv)), 0o600); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	name := "TestPost_HTTPSProxy_TrustedBySystemRoots"
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "FLUX_ORDER_TEST_SYSTEM_ROOTS_CHILD=1", "SSL_CERT_FILE="+pemFile, "SSL_CERT_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("the child delivering through the proxy: %v\n%s", err, out)
	}
}

// silentListener accepts connections on loopback and never reads or
// answers: a proxy that stalls.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// A proxy that accepts the connection and answers nothing (not the TLS
// handshake, not CONNECT, not the request): the attempt ends at its
// timeout, as "timeout".
func TestPost_ProxyStalls_OutcomeTimeout(t *testing.T) {
	for _, c := range []struct{ name, httpProxy, httpsProxy, url string }{
		{"https proxy, TLS handshake", "", "https://%s", "https://example.com/hook"},
		{"http proxy, CONNECT", "", "http://%s", "https://example.com/hook"},
		{"http proxy, absolute form", "http://%s", "", "http://receiver.test:8080/hook"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := silentListener(t)
			fill := func(f string) string {
				if f == "" {
					return ""
				}
				return fmt.Sprintf(f, addr)
			}
			setProxyEnv(t, fill(c.httpProxy), fill(c.httpsProxy))
			h := hookTo(t, c.url, "", 300*time.Millisecond, nil)
			start := time.Now()
			done := make(chan struct{})
			var outcome string
			var err error
			go func() { outcome, err = postOnce(t, h); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the attempt through a silent proxy did not end within 5s (timeout 300ms)")
			}
			if err == nil || outcome != "timeout" {
				t.Fatalf("want a failed attempt with outcome timeout, got %q, %v", outcome, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("the attempt took %v, want about its 300ms timeout", d)
			}
		})
	}
}

// startSOCKS5 is a SOCKS5 proxy without authentication that connects every
// request to target, whatever it asked for, and records the host:port
// asked for.
func startSOCKS5(t *testing.T, target string) (addr string, asked func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var mu sync.Mutex
	var seen []string
	serve := func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 262)
		// Greeting: version, methods; we choose "no authentication".
		if _, err := io.ReadFull(c, buf[:2]); err != nil || buf[0] != 5 {
			return
		}
		if _, err := io.ReadFull(c, buf[:buf[1]]); err != nil {
			return
		}
		if _, err := c.Write([]byte{5, 0}); err != nil {
			return
		}
		// Request: version, CONNECT, reserved, a domain name, a port.
		if _, err := io.ReadFull(c, buf[:5]); err != nil || buf[1] != 1 || buf[3] != 3 {
			return
		}
		host := make([]byte, int(buf[4])+2)
		if _, err := io.ReadFull(c, host); err != nil {
			return
		}
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s:%d", host[:len(host)-2], int(host[len(host)-2])<<8|int(host[len(host)-1])))
		mu.Unlock()
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		if _, err := c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
			return
		}
		go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
		_, _ = io.Copy(c, up)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// A socks5:// proxy URL: both kinds of endpoint through it, and one that
// never answers its greeting ends the attempt at its timeout (the SOCKS
// handshake had no deadline before).
func TestPost_SOCKS5Proxy(t *testing.T) {
	var plainSeen, secureSeen hostsSeen
	plain := httptest.NewServer(&plainSeen)
	defer plain.Close()
	secure := httptest.NewTLSServer(&secureSeen)
	defer secure.Close()

	t.Run("http endpoint", func(t *testing.T) {
		addr, asked := startSOCKS5(t, plain.Listener.Addr().String())
		setProxyEnv(t, "socks5://"+addr, "")
		if outcome, err := postOnce(t, hookTo(t, "http://receiver.test:8080/hook", "", 2*time.Second, nil)); err != nil {
			t.Fatalf("through the SOCKS5 proxy: %q, %v", outcome, err)
		}
		if got := asked(); len(got) != 1 || got[0] != "receiver.test:8080" {
			t.Fatalf("the proxy was asked for %q", got)
		}
		if got := plainSeen.got(); len(got) != 1 || got[0] != "receiver.test:8080/hook" {
			t.Fatalf("the endpoint saw %q", got)
		}
	})
	t.Run("https endpoint", func(t *testing.T) {
		addr, asked := startSOCKS5(t, secure.Listener.Addr().String())
		setProxyEnv(t, "", "socks5://"+addr)
		if outcome, err := postOnce(t, hookTo(t, "https://example.com/hook", caOf(secure), 2*time.Second, nil)); err != nil {
			t.Fatalf("through the SOCKS5 proxy: %q, %v", outcome, err)
		}
		if got := asked(); len(got) != 1 || got[0] != "example.com:443" {
			t.Fatalf("the proxy was asked for %q", got)
		}
	})
	t.Run("silent: timeout", func(t *testing.T) {
		setProxyEnv(t, "socks5://"+silentListener(t), "")
		h := hookTo(t, "http://receiver.test:8080/hook", "", 300*time.Millisecond, nil)
		start := time.Now()
		done := make(chan struct{})
		var outcome string
		var err error
		go func() { outcome, err = postOnce(t, h); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the attempt through a silent SOCKS5 proxy did not end within 5s (timeout 300ms)")
		}
		if err == nil || outcome != "timeout" || time.Since(start) > 2*time.Second {
			t.Fatalf("want a failed attempt with outcome timeout at about 300ms, got %q, %v after %v", outcome, err, time.Since(start))
		}
	})
}
