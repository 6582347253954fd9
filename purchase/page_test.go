package purchase_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/httpapi"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

// pageBudget is issue 12's bound on the page: document plus assets, gzipped.
const pageBudget = 100 << 10

var assetRef = regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`)

// fetchPage GETs path with or without gzip and returns the raw body.
func fetchPage(t *testing.T, base, path string, gz bool) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	// A transport that does not decompress: the test measures the wire.
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// The page and every asset it references are served gzipped when asked,
// identical to the plain bytes once unzipped, and weigh < 100 KB together.
func TestPage_GzippedUnder100KB(t *testing.T) {
	s := newTestSale(t, 10)
	base := s.Pods[0].URL
	resp, plainIndex := fetchPage(t, base, "/", false)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	refs := assetRef.FindAllStringSubmatch(string(plainIndex), -1)
	if len(refs) < 3 {
		t.Fatalf("the page references %d assets, want the script, the style sheet and the icon: %s", len(refs), plainIndex)
	}
	paths := []string{"/"}
	for _, m := range refs {
		paths = append(paths, m[1])
	}
	total, totalPlain := 0, 0
	for _, p := range paths {
		resp, gz := fetchPage(t, base, p, true)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("GET %s with gzip: %d, Content-Encoding %q", p, resp.StatusCode, resp.Header.Get("Content-Encoding"))
		}
		if !strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
			t.Fatalf("GET %s: Vary %q lacks Accept-Encoding", p, resp.Header.Get("Vary"))
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		unzipped, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		_, plain := fetchPage(t, base, p, false)
		if !bytes.Equal(unzipped, plain) {
			t.Fatalf("%s: the gzipped answer differs from the plain one", p)
		}
		t.Logf("%-32s %6d bytes, %6d gzipped", p, len(plain), len(gz))
		total += len(gz)
		totalPlain += len(plain)
	}
	t.Logf("the page: %d bytes, %d gzipped (budget %d)", totalPlain, total, pageBudget)
	if total >= pageBudget {
		t.Fatalf("the page weighs %d bytes gzipped, over the budget of %d", total, pageBudget)
	}
}

// The page runs no inline script and cannot be framed; assets are immutable
// under their content hash; unknown assets are a plain 404 problem.
func TestPage_SecurityHeadersAndCaching(t *testing.T) {
	s := newTestSale(t, 10)
	base := s.Pods[0].URL
	resp, index := fetchPage(t, base, "/", false)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Fatalf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Fatalf("CSP %q allows inline code", csp)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("headers of /: %v", resp.Header)
	}
	if regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]|\son[a-z]+=|\sstyle=`).Match(index) {
		t.Fatal("the page has inline script, an inline event handler or an inline style (the CSP would block it)")
	}
	for _, m := range assetRef.FindAllStringSubmatch(string(index), -1) {
		resp, _ := fetchPage(t, base, m[1], false)
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") ||
			resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("GET %s: %d, headers %v", m[1], resp.StatusCode, resp.Header)
		}
	}
	for _, p := range []string{"/assets/app.js", "/assets/nope.css", "/index.html", "/assets/../purchase"} {
		a := s.Do(mustRequest(t, http.MethodGet, base+p))
		if a.Status != http.StatusNotFound || a.Code != "not_found" {
			t.Fatalf("GET %s: want 404 not_found, got %d %q", p, a.Status, a.Code)
		}
	}
	a := s.Post(0, "/", "{}", nil)
	if a.Status != http.StatusMethodNotAllowed {
		t.Fatalf("POST /: want 405, got %d %q", a.Status, a.Code)
	}
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// GET /v1/sale answers the public facts, exactly these fields, and follows
// live changes (display name, window, pause, buyer limit).
func TestSale_PublicFactsAreLive(t *testing.T) {
	starts := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	s := newTestSale(t, 42, func(c *purchase.Config) {
		c.DisplayName = "Night of the Flux ✨"
		c.MaxPerBuyer = 3
		c.Schedule.StartsAt = starts
		c.HoldTTL = 90 * time.Second
	})
	var raw map[string]json.RawMessage
	if code := s.GetJSON("/v1/sale", &raw); code != http.StatusOK {
		t.Fatalf("GET /v1/sale: %d", code)
	}
	keys := []string{}
	for k := range raw {
		keys = append(keys, k)
	}
	allowed := map[string]bool{"displayName": true, "tickets": true, "startsAt": true, "endsAt": true, "paused": true,
		"holdTTL": true, "waitingRoom": true, "maxTicketsPerBuyer": true, "serverTime": true}
	for _, k := range keys {
		if !allowed[k] {
			t.Fatalf("GET /v1/sale has field %q beyond the public facts: %v", k, keys)
		}
	}
	var f httpapi.SaleBody
	s.GetJSON("/v1/sale", &f)
	if f.DisplayName != "Night of the Flux ✨" || f.Tickets != 42 || f.MaxTicketsPerBuyer != 3 || f.Paused || f.HoldTTL != 90 ||
		f.WaitingRoom.Enabled ||
		f.StartsAt == nil || !f.StartsAt.Equal(starts) || f.EndsAt != nil || time.Since(f.ServerTime).Abs() > 5*time.Second {
		t.Fatalf("GET /v1/sale: %+v", f)
	}
	// The FlashSale's settings, as a running pod applies them.
	svc := s.Pods[0].Svc
	svc.Apply(statusreport.Settings{Tickets: 42, DisplayName: "From the FlashSale", Paused: true, LockTTL: time.Second, HoldTTL: 30 * time.Second})
	f = httpapi.SaleBody{}
	s.GetJSON("/v1/sale", &f)
	if f.DisplayName != "From the FlashSale" || !f.Paused || f.StartsAt != nil || f.MaxTicketsPerBuyer != 0 || f.HoldTTL != 30 {
		t.Fatalf("after live changes: %+v", f)
	}
	svc.Apply(statusreport.Settings{Tickets: 42, LockTTL: time.Second})
	if s.GetJSON("/v1/sale", &f); f.DisplayName != s.Cfg.Sale || f.HoldTTL != 0 {
		t.Fatalf("without a display name the page shows the sale's name, got %q (holdTTL %v)", f.DisplayName, f.HoldTTL)
	}
}

func TestConfig_DisplayNameBounded(t *testing.T) {
	c := purchase.Config{Sale: "a", Tickets: 1, RedisAddr: "x:1", DatabaseURL: "postgres://x", Listen: ":0", LockTTL: time.Second, SaleSecret: "0123456789abcdef0123456789abcdef",
		DisplayName: strings.Repeat("é", purchase.MaxDisplayName)}
	if err := c.Validate(); err != nil {
		t.Fatalf("%d characters: %v", purchase.MaxDisplayName, err)
	}
	c.DisplayName += "x"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "display-name") {
		t.Fatalf("%d characters: want a --display-name error, got %v", purchase.MaxDisplayName+1, err)
	}
}
