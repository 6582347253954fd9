package loadtest

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/purchase/buyerauth/buyerauthtest"
)

func TestReadResponse_ParsesWhatServersSend(t *testing.T) {
	cases := []struct {
		name       string
		raw        string
		wantStatus int
		wantBody   string
		wantKeep   bool
	}{
		{"content length", "HTTP/1.1 409 Conflict\r\nContent-Type: application/problem+json\r\nContent-Length: 5\r\n\r\nhello", 409, "hello", true},
		{"lower-case headers (nginx, HTTP/2 gateways)", "HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}", 201, "{}", true},
		{"chunked with an extension and a trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n", 200, "abcde", true},
		{"connection close", "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno", 503, "no", false},
		{"HTTP/1.0 closes by default", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "ok", false},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", 200, "ok", true},
		{"an interim 100 before the answer", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", 201, "x", true},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", 204, "", true},
		{"no length: the body ends with the connection", "HTTP/1.1 200 OK\r\n\r\nuntil eof", 200, "until eof", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body, keep, err := readResponse(bufio.NewReader(strings.NewReader(c.raw)), make([]byte, 0, 1))
			if err != nil {
				t.Fatalf("expected no error, got %v", err)
			}
			if status != c.wantStatus || string(body) != c.wantBody || keep != c.wantKeep {
				t.Fatalf("expected %d %q keep=%v, got %d %q keep=%v", c.wantStatus, c.wantBody, c.wantKeep, status, body, keep)
			}
		})
	}
}

func TestReadResponse_ReadsTwoAnswersFromOneConnection(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 409 Conflict\r\nContent-Length: 3\r\n\r\noneHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\ntwo"))
	for _, want := range []string{"one", "two"} {
		_, body, keep, err := readResponse(br, nil)
		if err != nil || string(body) != want || !keep {
			t.Fatalf("expected %q on a kept connection, got %q keep=%v err=%v", want, body, keep, err)
		}
	}
}

func TestReadResponse_BrokenAnswersAreErrors(t *testing.T) {
	cases := []struct {
		name string
		raw  string
		want error // nil: any error
	}{
		{"nothing at all", "", io.ErrUnexpectedEOF},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n", nil},
		{"a status that is not a number", "HTTP/1.1 2x1 Created\r\n\r\n", nil},
		{"a header without a colon", "HTTP/1.1 200 OK\r\nbroken\r\n\r\n", nil},
		{"a bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", nil},
		{"a body cut short", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", io.ErrUnexpectedEOF},
		{"a bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", nil},
		{"a huge body", "HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", errBodyTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, keep, err := readResponse(bufio.NewReader(strings.NewReader(c.raw)), nil)
			if err == nil || keep {
				t.Fatalf("expected an error and a dropped connection, got err=%v keep=%v", err, keep)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("expected %v, got %v", c.want, err)
			}
		})
	}
}

func TestRequestBuilder_BuildsRequestsNetHTTPAccepts(t *testing.T) {
	cases := []struct {
		name               string
		url, host          string
		seat, buyer        int64
		wantPath, wantHost string
		wantBody           string
	}{
		{"a seat", "http://127.0.0.1:8080", "", 42, 7, "/v1/tickets/42/purchase", "127.0.0.1:8080", `{"buyerId":"buyer-7"}`},
		{"any seat", "http://127.0.0.1:8080", "", 0, 1000, "/v1/purchase", "127.0.0.1:8080", `{"buyerId":"buyer-1000"}`},
		{"behind a path prefix and a Host", "http://127.0.0.1:18080/demo/", "demo.example", 9999999, 123456789, "/demo/v1/tickets/9999999/purchase", "demo.example", `{"buyerId":"buyer-123456789"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tg, err := parseTarget(c.url, c.host)
			if err != nil {
				t.Fatal(err)
			}
			raw := newRequestBuilder(tg, "r1", nil).appendRequest(nil, 77, c.seat, c.buyer)
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(string(raw))))
			if err != nil {
				t.Fatalf("expected a valid request, got %v in %q", err, raw)
			}
			body, _ := io.ReadAll(req.Body)
			if req.Method != http.MethodPost || req.URL.Path != c.wantPath || req.Host != c.wantHost || string(body) != c.wantBody ||
				req.Header.Get("Content-Type") != "application/json" || req.Header.Get("Idempotency-Key") != "lt-r1-77" {
				t.Fatalf("expected POST %s Host %s body %s, got %s %s Host %s body %s (%v)",
					c.wantPath, c.wantHost, c.wantBody, req.Method, req.URL.Path, req.Host, body, req.Header)
			}
		})
	}
}

func TestRequestBuilder_DoesNotAllocateIntoAWarmBuffer(t *testing.T) {
	tg, _ := parseTarget("http://127.0.0.1:8080", "")
	b := newRequestBuilder(tg, "r1", nil)
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(1000, func() { buf = b.appendRequest(buf[:0], 9, 123, 456) }); n != 0 {
		t.Fatalf("expected 0 allocations per request built, got %v", n)
	}
}

func TestRequestBuilder_BuildsTheCheckoutsRequestsNetHTTPAccepts(t *testing.T) {
	tg, err := parseTarget("http://127.0.0.1:18080/demo/", "demo.example")
	if err != nil {
		t.Fatal(err)
	}
	tokens := NewTokens(buyerauthtest.NewKey("k"), "https://id.example.com/", "lt", 0)
	b := newRequestBuilder(tg, "r1", tokens)
	hold := uuid.MustParse("0190c7b0-89ab-7cde-8f01-23456789abcd")
	cases := []struct {
		name, method, path, body, contentType string
		raw                                   []byte
	}{
		{"hold", "POST", "/demo/v1/tickets/9999999/hold", `{"buyerId":"buyer-123456789"}`, "application/json",
			b.appendHold(nil, 9999999, 123456789)},
		{"confirm", "POST", "/demo/v1/holds/" + hold.String() + "/confirm", `{"buyerId":"buyer-123456789","paymentRef":"lt-10000"}`, "application/json",
			b.appendConfirm(nil, hold, 123456789, 10000)},
		{"release", "DELETE", "/demo/v1/holds/" + hold.String(), "", "", b.appendRelease(nil, hold, 123456789)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(string(c.raw))))
			if err != nil {
				t.Fatalf("expected a valid request, got %v in %q", err, c.raw)
			}
			body, _ := io.ReadAll(req.Body)
			if req.Method != c.method || req.URL.Path != c.path || req.Host != "demo.example" || string(body) != c.body ||
				req.Header.Get("Content-Type") != c.contentType || req.Header.Get("Idempotency-Key") != "" ||
				req.Header.Get("Authorization") != "Bearer "+tokens.For(123456789) {
				t.Fatalf("expected %s %s Host demo.example body %s with buyer-123456789's token and no key, got %s %s Host %s body %s (%v)",
					c.method, c.path, c.body, req.Method, req.URL.Path, req.Host, body, req.Header)
			}
		})
	}
	buf := make([]byte, 0, 2048)
	if n := testing.AllocsPerRun(1000, func() {
		buf = b.appendHold(buf[:0], 12, 34)
		buf = b.appendConfirm(buf[:0], hold, 34, 56)
		buf = b.appendRelease(buf[:0], hold, 34)
	}); n != 0 {
		t.Fatalf("expected 0 allocations per checkout's requests, got %v", n)
	}
}
