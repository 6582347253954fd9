package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// h1conn is one keep-alive HTTP/1.1 connection that writes pre-built
// requests and reads answers into a reused buffer. net/http's client, as
// the queue scenario uses it, costs about three times the client
// CPU per request on loopback (goroutine hand-offs, header maps, 64
// allocations): BenchmarkClient (client_bench_test.go, docs/benchmarks.md),
// 2026-12-05 16:20 UTC, 10 workers on an idle 2-core machine, medians of
// 5: 9.3 µs and 0 allocations per request here against 27.0 µs and 64
// (5.4 KB) with net/http, and 1.9 times the requests per second through
// the same server.
// With net/http the client, not the server, would be the limit of a test.
type h1conn struct {
	c  net.Conn
	br *bufio.Reader
}

// maxBody bounds what is kept of one answer: purchase answers are a few
// hundred bytes; a misdirected test must not fill memory.
const maxBody = 1 << 20

var errBodyTooLarge = errors.New("answer body larger than 1 MiB")

func dialH1(ctx context.Context, t target, tlsCfg *tls.Config, timeout time.Duration) (*h1conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{}
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	if t.scheme == "https" {
		cfg := &tls.Config{}
		if tlsCfg != nil {
			cfg = tlsCfg.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = t.serverName()
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, err
		}
		c = tc
	}
	return &h1conn{c: c, br: bufio.NewReaderSize(c, 8<<10)}, nil
}

func (h *h1conn) close() { _ = h.c.Close() }

// roundTrip writes req and reads one answer, its body into buf[:0] (grown
// as needed and returned). keep says whether the connection may carry the
// next request.
func (h *h1conn) roundTrip(req []byte, deadline time.Time, buf []byte) (status int, body []byte, keep bool, err error) {
	if err := h.c.SetDeadline(deadline); err != nil {
		return 0, buf[:0], false, err
	}
	if _, err := h.c.Write(req); err != nil {
		return 0, buf[:0], false, err
	}
	return readResponse(h.br, buf)
}

// readResponse reads one HTTP/1.x answer, skipping interim 1xx answers.
func readResponse(br *bufio.Reader, buf []byte) (status int, body []byte, keep bool, err error) {
	body = buf[:0]
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, body, false, noEOF(err)
		}
		var minor byte
		status, minor, err = parseStatusLine(line)
		if err != nil {
			return 0, body, false, err
		}
		keep = minor == '1' // HTTP/1.1 keeps the connection unless told otherwise
		length, chunked := int64(-1), false
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return status, body, false, noEOF(err)
			}
			line = trimCRLF(line)
			if len(line) == 0 {
				break
			}
			name, value, ok := bytes.Cut(line, []byte{':'})
			if !ok {
				return status, body, false, fmt.Errorf("malformed header line %q", line)
			}
			value = bytes.TrimSpace(value)
			switch {
			case bytes.EqualFold(name, []byte("Content-Length")):
				if length, err = parseLength(value); err != nil {
					return status, body, false, err
				}
			case bytes.EqualFold(name, []byte("Transfer-Encoding")):
				chunked = containsFold(value, "chunked")
			case bytes.EqualFold(name, []byte("Connection")):
				if containsFold(value, "close") {
					keep = false
				} else if containsFold(value, "keep-alive") {
					keep = true
				}
			}
		}
		if status >= 100 && status < 200 && status != 101 {
			continue // 100 Continue and the like: the real answer follows
		}
		switch {
		case status == 204 || status == 304:
			return status, body, keep, nil
		case chunked:
			body, err = readChunked(br, body)
			return status, body, keep && err == nil, err
		case length >= 0:
			if length > maxBody {
				return status, body, false, errBodyTooLarge
			}
			body = grow(body, int(length))
			if _, err := io.ReadFull(br, body); err != nil {
				return status, body, false, noEOF(err)
			}
			return status, body, keep, nil
		default: // the body ends when the server closes the connection
			body, err = readAll(br, body)
			return status, body, false, err
		}
	}
}

// parseStatusLine reads "HTTP/1.x NNN reason".
func parseStatusLine(line []byte) (status int, minor byte, err error) {
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, 0, fmt.Errorf("malformed status line %q", trimCRLF(line))
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, fmt.Errorf("malformed status line %q", trimCRLF(line))
		}
		status = status*10 + int(c-'0')
	}
	return status, line[7], nil
}

func parseLength(v []byte) (int64, error) {
	if len(v) == 0 || len(v) > 18 {
		return 0, fmt.Errorf("bad Content-Length %q", v)
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad Content-Length %q", v)
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

func readChunked(br *bufio.Reader, body []byte) ([]byte, error) {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return body, noEOF(err)
		}
		line = trimCRLF(line)
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // chunk extensions
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return body, fmt.Errorf("bad chunk size %q", line)
		}
		if size == 0 {
			break
		}
		if int64(len(body))+size > maxBody {
			return body, errBodyTooLarge
		}
		n := len(body)
		body = grow(body, n+int(size))
		if _, err := io.ReadFull(br, body[n:]); err != nil {
			return body, noEOF(err)
		}
		if _, err := br.Discard(2); err != nil { // the chunk's CRLF
			return body, noEOF(err)
		}
	}
	for { // trailers, up to the empty line
		line, err := br.ReadSlice('\n')
		if err != nil {
			return body, noEOF(err)
		}
		if len(trimCRLF(line)) == 0 {
			return body, nil
		}
	}
}

func readAll(br *bufio.Reader, body []byte) ([]byte, error) {
	for {
		if len(body) == cap(body) {
			if len(body) >= maxBody {
				return body, errBodyTooLarge
			}
			body = append(body, 0)[:len(body)]
		}
		n, err := br.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if err == io.EOF {
			return body, nil
		}
		if err != nil {
			return body, err
		}
	}
}

// grow returns b with length n, reusing its array when large enough.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	return append(b[:cap(b)], make([]byte, n-cap(b))...)[:n]
}

func trimCRLF(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte{'\n'})
	return bytes.TrimSuffix(b, []byte{'\r'})
}

// containsFold reports whether ASCII word occurs in v, ignoring case.
func containsFold(v []byte, word string) bool {
	for i := 0; i+len(word) <= len(v); i++ {
		if bytes.EqualFold(v[i:i+len(word)], []byte(word)) {
			return true
		}
	}
	return false
}

// noEOF turns an EOF in the middle of an answer into an error that says so.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
