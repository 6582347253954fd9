package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpproxy"
)

// maxResponseBody is how much of an answer's body is read (and dropped):
// a receiver's answer means its status code, nothing more.
const maxResponseBody = 64 << 10

// readBuffer bounds an answer's status line and headers (fasthttp's
// default, 4 KiB, refuses a gateway's cookies and security headers).
// Buffers are pooled: only attempts in flight hold one.
const readBuffer = 16 << 10

// idleConnTimeout closes a kept-alive connection idle this long: under the
// 5 s after which common servers (Node, uvicorn) close theirs, so that a
// lull rarely leaves connections the server already closed.
const idleConnTimeout = 4 * time.Second

// newClient posts to one endpoint (docs/delivery.md, Why fasthttp). A
// HostClient, not net/http: per request it costs a quarter of the CPU (no
// goroutines per connection, no header maps). It keeps what the
// net/http client did:
//   - redirects are not followed (HostClient.Do never follows them: a
//     3xx is a failed attempt);
//   - each attempt is bounded by post's deadline (dial, TLS handshake,
//     write and read);
//   - a CA bundle, when given, replaces the system roots; TLS ≥ 1.2; the
//     URL's host is the server name (SNI and verification);
//   - HTTPS_PROXY, HTTP_PROXY and NO_PROXY from the environment, read as
//     net/http reads them (golang.org/x/net/http/httpproxy, which net/http
//     itself uses), and followed as net/http follows them (proxy.go): a
//     CONNECT tunnel for an https:// endpoint, the request in absolute form
//     to the proxy for an http:// one, TLS to an https:// proxy;
//   - connections for every attempt the pod may have in flight, kept alive.
//
// conns tracks the connections so that the pod's stop ends its attempts
// in flight (fasthttp has no context).
func newClient(rawURL, caPEM string, timeout time.Duration, workers int, conns *connSet) (*fasthttp.HostClient, error) {
	u, err := url.Parse(strings.TrimSpace(rawURL))
	if err != nil {
		return nil, err
	}
	isTLS := u.Scheme == "https"
	port := u.Port()
	if port == "" {
		port = "80"
		if isTLS {
			port = "443"
		}
	}
	addr := net.JoinHostPort(u.Hostname(), port)

	proxyURL, err := httpproxy.FromEnvironment().ProxyFunc()(u)
	if err != nil {
		// Not err: it quotes the whole proxy URL, credentials included.
		return nil, errors.New("the proxy from the environment (HTTPS_PROXY, HTTP_PROXY) is not a valid URL")
	}
	// The roots verify the endpoint's certificate and, as net/http did, an
	// https:// proxy's: a CA bundle, when given, replaces the system's.
	var roots *x509.CertPool
	if caPEM != "" && (isTLS || proxyURL != nil && proxyURL.Scheme == "https") {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, errors.New("caSecretRef holds no PEM certificate")
		}
	}
	var tlsConfig *tls.Config
	if isTLS {
		tlsConfig = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12, RootCAs: roots}
	}

	dial := dialDirect
	var transport fasthttp.RoundTripper // fasthttp's own
	if proxyURL != nil {
		if dial, err = proxyDialer(proxyURL, isTLS, roots); err != nil {
			return nil, err
		}
		if !isTLS && (proxyURL.Scheme == "http" || proxyURL.Scheme == "https") {
			transport = absoluteForm{auth: proxyAuthorization(proxyURL)}
		}
	}
	// Every attempt a pod may have in flight has its connection: the
	// fan-out's batches (fanOutLoops × workers) and River's workers. One
	// more waits for a connection rather than failing.
	maxConns := (fanOutLoops + 1) * max(workers, 64)
	hc := &fasthttp.HostClient{
		Addr:      addr,
		IsTLS:     isTLS,
		TLSConfig: tlsConfig,
		Transport: transport,
		// The connection is tracked (the pod's stop closes it) and its
		// TLS handshake is done here, within the dial's time: fasthttp,
		// left to it, would run it inside the first write with no read
		// deadline, so a server that never answers the ClientHello would
		// hold the attempt forever.
		DialTimeout: handshaking(conns.track(dial), tlsConfig),
		// Most recently used first, so that the connections a lull leaves
		// idle are the ones that expire.
		ConnPoolStrategy:    fasthttp.LIFO,
		MaxIdleConnDuration: idleConnTimeout,
		MaxConns:            maxConns,
		MaxConnWaitTimeout:  timeout,
		MaxResponseBodySize: maxResponseBody,
		ReadBufferSize:      readBuffer,
		// An error names no header value (a receiver's cookies would
		// reach status.delivery, River's errors and the logs).
		SecureErrorLogMessage: true,
		// The URL's path is sent as written, as net/http does.
		DisablePathNormalizing:   true,
		NoDefaultUserAgentHeader: true,
	}
	hc.RetryIfErr = func(_ *fasthttp.Request, attempts int, err error) (bool, bool) {
		if attempts != 1 || !closedBeforeAnswer(err) {
			return false, false
		}
		// The other idle connections are as old as this one: the retry
		// dials a fresh one rather than take the next closed one.
		hc.CloseIdleConnections()
		return false, true
	}
	return hc, nil
}

// handshaking completes the TLS handshake of each connection dial makes,
// within the dial's timeout; tlsConfig nil: plain TCP. fasthttp does not
// wrap a connection that has a Handshake method again.
func handshaking(dial fasthttp.DialFuncWithTimeout, tlsConfig *tls.Config) fasthttp.DialFuncWithTimeout {
	if tlsConfig == nil {
		return dial
	}
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		if timeout <= 0 {
			timeout = fasthttp.DefaultDialTimeout // as track does
		}
		start := time.Now()
		raw, err := dial(addr, timeout)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithDeadline(context.Background(), start.Add(timeout))
		defer cancel()
		c := tls.Client(raw, tlsConfig)
		if err := c.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			if ctx.Err() != nil {
				return nil, fasthttp.ErrTLSHandshakeTimeout
			}
			return nil, err
		}
		return c, nil
	}
}

// dialDirect dials with net's dialer: it resolves at every dial and falls
// back from IPv6 to IPv4 after 300 ms (Happy Eyeballs), as net/http did;
// fasthttp's own dialer tries one address after another under one
// deadline and caches names for a minute. It costs per connection, not
// per request.
func dialDirect(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

// closedBeforeAnswer: the connection was closed before any answer, the
// race of a kept-alive connection the server closed as the request went
// out (net/http avoids it with a reader per idle connection, which
// fasthttp does not have). Such a POST is sent again, once, on a fresh
// connection. The receiver may have got it: deliveries are at least once,
// deduplicated by webhook-id.
func closedBeforeAnswer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// post is one attempt: a signed POST of the body; outcome names a failure
// for the metrics (status code class, timeout, error). The attempt ends at
// its timeout or ctx's deadline, whichever is first; a ctx cancelled
// without a deadline does not end it (fasthttp has no context), but the
// pod's stop does (connSet.close).
//
// Its error never names the endpoint (below, hideEndpoint).
func (d *Deliverer) post(ctx context.Context, h *webhook, a DeliveryArgs) (outcome string, err error) {
	defer func() {
		if err != nil {
			err = hideEndpoint(err, h.URL)
		}
	}()
	if err := ctx.Err(); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "timeout", fmt.Errorf("POST %s: timeout: %w", a.Webhook, err)
		}
		return "error", fmt.Errorf("POST %s: %w", a.Webhook, err)
	}
	ts := time.Now().Unix()
	sig, err := Sign(h.SigningSecrets, a.ID, ts, []byte(a.Body))
	if err != nil {
		return "unresolved", err
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(h.URL)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.SetUserAgent("flux-order-webhooks/1")
	req.Header.Set(HeaderID, a.ID)
	var tsBuf [20]byte
	req.Header.SetBytesV(HeaderTimestamp, strconv.AppendInt(tsBuf[:0], ts, 10))
	req.Header.Set(HeaderSignature, sig)
	req.SetBodyString(a.Body)

	deadline := time.Now().Add(h.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	err = h.client.DoDeadline(req, resp, deadline)
	// A body over maxResponseBody is not read further (the connection is
	// closed): the status code, read before it, decides, as when net/http
	// read 64 KiB of it and dropped the rest.
	if err != nil && !errors.Is(err, fasthttp.ErrBodyTooLarge) {
		if isTimeout(err) {
			return "timeout", fmt.Errorf("POST %s: timeout: %w", a.Webhook, err)
		}
		return "error", fmt.Errorf("POST %s: %w", a.Webhook, err)
	}
	if code := resp.StatusCode(); code < 200 || code > 299 {
		return strconv.Itoa(code/100) + "xx", fmt.Errorf("POST %s: answered %d", a.Webhook, code)
	}
	return "", nil
}

// hideEndpoint is err with every mention of the endpoint (rawURL, its
// host:port, its host name) replaced by <endpoint> or <host>. The URL is a
// Secret's value that the sale's author names but may not be allowed to
// read (docs/security.md), and an attempt's error reaches status.delivery,
// the operator's WebhookFailing event, River's job and the logs: a dial,
// DNS, TLS or proxy error would otherwise repeat the host (a CONNECT's,
// the URL itself). The webhook's name says which endpoint it was.
func hideEndpoint(err error, rawURL string) error {
	rawURL = strings.TrimSpace(rawURL)
	u, perr := url.Parse(rawURL)
	if perr != nil || rawURL == "" {
		return err
	}
	msg := err.Error()
	out := msg
	// What the name resolved to, and the names a certificate was for
	// (or the authority it was not signed by), say as much as the name.
	var op *net.OpError
	if errors.As(err, &op) && op.Addr != nil {
		out = strings.ReplaceAll(out, op.Addr.String(), "<endpoint>")
	}
	var wrongName x509.HostnameError
	if errors.As(err, &wrongName) {
		out = strings.ReplaceAll(out, wrongName.Error(), "x509: the certificate is not valid for <host>")
	}
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) {
		out = strings.ReplaceAll(out, unknownCA.Error(), "x509: certificate signed by unknown authority")
	}
	out = strings.ReplaceAll(out, rawURL, "<endpoint>")
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	out = strings.ReplaceAll(out, net.JoinHostPort(u.Hostname(), port), "<endpoint>")
	if u.Host != u.Hostname() { // an explicit port (or an IPv6 address)
		out = strings.ReplaceAll(out, u.Host, "<endpoint>")
	}
	out = replaceName(out, u.Hostname(), "<host>")
	if out == msg {
		return err
	}
	return &hiddenEndpoint{msg: out, err: err}
}

// replaceName replaces each occurrence of name in s that is a whole host
// name (not a part of a longer one).
func replaceName(s, name, with string) string {
	if name == "" {
		return s
	}
	hostChar := func(c byte) bool {
		return c == '.' || c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
	}
	var b strings.Builder
	for {
		i := strings.Index(s, name)
		if i < 0 {
			break
		}
		end := i + len(name)
		// A trailing dot ends a sentence, not the name.
		whole := (i == 0 || !hostChar(s[i-1])) &&
			(end == len(s) || !hostChar(s[end]) || s[end] == '.' && (end+1 == len(s) || !hostChar(s[end+1])))
		b.WriteString(s[:i])
		if whole {
			b.WriteString(with)
		} else {
			b.WriteString(name)
		}
		s = s[end:]
	}
	b.WriteString(s)
	return b.String()
}

// hiddenEndpoint is an attempt's error with the endpoint taken out of its
// text; errors.Is and As still see the original (isTimeout, the outcome).
type hiddenEndpoint struct {
	msg string
	err error
}

func (e *hiddenEndpoint) Error() string { return e.msg }
func (e *hiddenEndpoint) Unwrap() error { return e.err }

// isTimeout: fasthttp's own timeouts (ErrTimeout has Timeout(); a dial's
// and a TLS handshake's are plain errors) and the network's.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.Is(err, fasthttp.ErrTLSHandshakeTimeout) {
		return true
	}
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// connSet is every webhook connection of one pod, so that its stop ends
// the attempts in flight at once, as net/http's context did: River's
// in-flight retries then record as failed and are retried by any pod,
// instead of waiting for River's rescuer.
type connSet struct {
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func newConnSet() *connSet { return &connSet{conns: map[*trackedConn]struct{}{}} }

var errStopped = errors.New("the pod's delivery stopped")

// track wraps dial: each connection joins the set, and none is made once
// the set is closed.
func (s *connSet) track(dial fasthttp.DialFuncWithTimeout) fasthttp.DialFuncWithTimeout {
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		if timeout <= 0 {
			// A request waiting for a free connection has it dialled
			// without its timeout (fasthttp's dialConnFor).
			timeout = fasthttp.DefaultDialTimeout
		}
		conn, err := dial(addr, timeout)
		if err != nil || s == nil {
			return conn, err
		}
		c := &trackedConn{Conn: conn, s: s}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			_ = conn.Close()
			return nil, errStopped
		}
		s.conns[c] = struct{}{}
		return c, nil
	}
}

// close closes every connection, in use or idle, and refuses new ones:
// the attempts in flight fail at once.
func (s *connSet) close() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[*trackedConn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	s *connSet
}

func (c *trackedConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}
