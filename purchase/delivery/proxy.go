package delivery

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	netproxy "golang.org/x/net/proxy"
)

// An endpoint behind a proxy is reached as net/http reaches it
// (docs/delivery.md, Network): an https:// endpoint through a CONNECT
// tunnel, an http:// one by sending the request to the proxy with its full
// URI (absolute form, RFC 9112 §3.2.2), which proxies that refuse CONNECT
// to ports other than 443 (Squid's default) still forward; the proxy
// itself over TCP (http://) or TLS (https://); SOCKS5 for both.

// proxyDialer is the dial function for an endpoint behind proxyURL;
// tunnel: the endpoint is https:// (a CONNECT tunnel), else the connection
// is the proxy's, for absoluteForm. roots verify an https:// proxy's
// certificate (nil: the system's).
func proxyDialer(proxyURL *url.URL, tunnel bool, roots *x509.CertPool) (fasthttp.DialFuncWithTimeout, error) {
	switch proxyURL.Scheme {
	case "http", "https":
	case "socks5", "socks5h":
		return socksDialer(proxyURL)
	default:
		return nil, fmt.Errorf("proxy %s: scheme %q is not supported (http, https, socks5)", proxyURL.Redacted(), proxyURL.Scheme)
	}
	proxyAddr := canonicalAddr(proxyURL)
	name := proxyURL.Redacted()
	auth := proxyAuthorization(proxyURL)
	var tlsConfig *tls.Config
	if proxyURL.Scheme == "https" {
		// As net/http: the proxy's certificate is verified against the
		// roots the endpoint's would be, for the proxy's name.
		tlsConfig = &tls.Config{ServerName: proxyURL.Hostname(), RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		// The dial, the TLS handshake with the proxy and its answer to
		// CONNECT share the dial's time (the attempt's), so a proxy that
		// stalls ends the attempt at its timeout.
		deadline := time.Now().Add(timeout)
		conn, err := dialDirect(proxyAddr, timeout)
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", name, err)
		}
		c, err := viaProxy(conn, deadline, tlsConfig, tunnel, addr, auth)
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("proxy %s: %w", name, err)
		}
		return c, nil
	}, nil
}

// viaProxy readies conn, a TCP connection to the proxy: the TLS handshake
// with an https:// proxy (the connection returned is then the TLS one),
// then, to tunnel, the CONNECT to addr. Both end at deadline.
func viaProxy(conn net.Conn, deadline time.Time, tlsConfig *tls.Config, tunnel bool, addr, auth string) (net.Conn, error) {
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, err
	}
	c := conn
	if tlsConfig != nil {
		tc := tls.Client(conn, tlsConfig)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		c = tc
	}
	if tunnel {
		if err := connect(c, addr, auth); err != nil {
			return nil, err
		}
	}
	return c, conn.SetDeadline(time.Time{})
}

// socksDialer tunnels through a SOCKS5 proxy (golang.org/x/net/proxy, as
// net/http's own copy of it), the dial and the SOCKS handshake within the
// dial's time.
func socksDialer(proxyURL *url.URL) (fasthttp.DialFuncWithTimeout, error) {
	name := proxyURL.Redacted()
	d, err := netproxy.FromURL(proxyURL, &net.Dialer{})
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", name, err)
	}
	cd, ok := d.(netproxy.ContextDialer)
	if !ok {
		return nil, fmt.Errorf("proxy %s: its dialer takes no deadline", name)
	}
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := cd.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", name, err)
		}
		return c, nil
	}, nil
}

// connect asks the proxy for a tunnel to addr (host:port) and reads its
// answer: 200, as net/http requires. The answer's headers are bounded as
// an endpoint's are (readBuffer) and never quoted in the error.
func connect(rw io.ReadWriter, addr, auth string) error {
	if strings.ContainsAny(addr, "\r\n") {
		return errors.New("the endpoint's address contains CR or LF")
	}
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if auth != "" {
		req += "Proxy-Authorization: " + auth + "\r\n"
	}
	if _, err := io.WriteString(rw, req+"\r\n"); err != nil {
		return err
	}
	// The endpoint speaks only after our ClientHello: a byte read beyond
	// the answer is the proxy's error, not the tunnel's.
	br := bufio.NewReaderSize(io.LimitReader(rw, readBuffer), 1024)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return fmt.Errorf("reading the answer to CONNECT: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the proxy answered %d to CONNECT %s", resp.StatusCode, addr)
	}
	if br.Buffered() > 0 {
		return errors.New("the proxy sent data after its answer to CONNECT")
	}
	return nil
}

// absoluteForm sends each request of an http:// endpoint to the proxy its
// connections go to, with the full URI in the request line (RFC 9112
// §3.2.2) and the proxy's credentials, as net/http does. fasthttp writes
// the request line from the request's parsed URI (path and query only)
// unless the request carries a Host header and a URI set after parsing:
// that is what this sets, then it writes and reads as fasthttp does.
type absoluteForm struct {
	auth string // Proxy-Authorization, or ""
}

func (t absoluteForm) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	uri := req.URI()
	host := uri.Host()
	// The path and query as the direct request line carries them (the
	// client's DisablePathNormalizing: as written).
	path := uri.RequestURI()
	target := make([]byte, 0, len("http://")+len(host)+len(path))
	target = append(append(append(target, "http://"...), host...), path...)
	req.Header.SetHostBytes(host)
	if t.auth != "" {
		req.Header.Set(headerProxyAuthorization, t.auth)
	}
	req.SetRequestURIBytes(target)
	return fasthttp.DefaultTransport.RoundTrip(hc, req, resp)
}

const headerProxyAuthorization = "Proxy-Authorization"

// proxyAuthorization is Basic credentials from the proxy URL's userinfo
// (decoded, as net/http sends them), or "".
func proxyAuthorization(u *url.URL) string {
	if u.User == nil {
		return ""
	}
	password, _ := u.User.Password()
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+password))
}

// canonicalAddr is an http:// or https:// proxy's host:port, the scheme's
// port when the URL names none (as net/http dials it).
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}
