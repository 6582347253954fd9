package purchase_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/httpapi"
)

// Every lax input of issue 10, item 5, with the answer it gets now.
func TestAPI_LaxInputs_AreRefusedWithTheirStatusAndCode(t *testing.T) {
	s := newTestSale(t, 10)
	cases := []struct {
		name, path, body string
		header           map[string]string
		status           int
		code             string
	}{
		{"duplicate keys", "/v1/tickets/1/purchase", `{"buyerId":"a","buyerId":"b"}`, nil, 400, "invalid_request"},
		{"field name in another case", "/v1/tickets/1/purchase", `{"BUYERID":"a"}`, nil, 400, "invalid_request"},
		{"field name in title case", "/v1/tickets/1/purchase", `{"BuyerId":"a"}`, nil, 400, "invalid_request"},
		{"invalid UTF-8", "/v1/tickets/1/purchase", "{\"buyerId\":\"al\xffce\"}", nil, 400, "invalid_request"},
		{"lone surrogate escape", "/v1/tickets/1/purchase", `{"buyerId":"al\ud800ce"}`, nil, 400, "invalid_request"},
		{"white space only", "/v1/tickets/1/purchase", `{"buyerId":" \t "}`, nil, 400, "invalid_request"},
		{"ideographic space only", "/v1/tickets/1/purchase", `{"buyerId":"\u3000"}`, nil, 400, "invalid_request"},
		{"leading white space", "/v1/tickets/1/purchase", `{"buyerId":" alice"}`, nil, 400, "invalid_request"},
		{"zero-width space (Cf)", "/v1/tickets/1/purchase", `{"buyerId":"alice\u200b"}`, nil, 400, "invalid_request"},
		{"raw zero-width joiner (Cf)", "/v1/tickets/1/purchase", "{\"buyerId\":\"ali\u200dce\"}", nil, 400, "invalid_request"},
		{"line separator (Zl)", "/v1/tickets/1/purchase", `{"buyerId":"a\u2028b"}`, nil, 400, "invalid_request"},
		{"paragraph separator (Zp)", "/v1/tickets/1/purchase", `{"buyerId":"a\u2029b"}`, nil, 400, "invalid_request"},
		{"private use (Co)", "/v1/tickets/1/purchase", `{"buyerId":"a\ue000"}`, nil, 400, "invalid_request"},
		{"unassigned (Cn)", "/v1/tickets/1/purchase", `{"buyerId":"a\u0378"}`, nil, 400, "invalid_request"},
		{"control character (Cc)", "/v1/tickets/1/purchase", `{"buyerId":"a\u0007"}`, nil, 400, "invalid_request"},
		{"ticket id with leading zeros", "/v1/tickets/007/purchase", `{"buyerId":"a"}`, nil, 404, "ticket_not_found"},
		{"ticket id with a sign", "/v1/tickets/+8/purchase", `{"buyerId":"a"}`, nil, 404, "ticket_not_found"},
		{"ticket id negative", "/v1/tickets/-1/purchase", `{"buyerId":"a"}`, nil, 404, "ticket_not_found"},
		{"doubled slash", "/v1//tickets/1/purchase", `{"buyerId":"a"}`, nil, 404, "not_found"},
		{"dot segment", "/v1/tickets/./1/purchase", `{"buyerId":"a"}`, nil, 404, "not_found"},
		{"trailing slash", "/v1/purchase/", `{"buyerId":"a"}`, nil, 404, "not_found"},
		{"unknown path", "/v2/nothing", `{"buyerId":"a"}`, nil, 404, "not_found"},
		{"metrics on the API listener", "/metrics", ``, nil, 404, "not_found"},
		{"key over 255 bytes", "/v1/tickets/1/purchase", `{"buyerId":"a"}`, map[string]string{"Idempotency-Key": strings.Repeat("k", httpapi.MaxIdemKeyLen+1)}, 400, "invalid_request"},
		{"key with non-ASCII", "/v1/tickets/1/purchase", `{"buyerId":"a"}`, map[string]string{"Idempotency-Key": "kéy"}, 400, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := s.Post(0, c.path, c.body, c.header)
			if a.Status != c.status || a.Code != c.code {
				t.Fatalf("want %d %s, got %d %s", c.status, c.code, a.Status, a.Code)
			}
			if a.Header.Get("Location") != "" {
				t.Fatalf("no redirects: got Location %q", a.Header.Get("Location"))
			}
			if got := a.Header.Get("Idempotency-Key"); got != "" {
				t.Fatalf("a refused request must not echo its key, got %d bytes back", len(got))
			}
		})
	}

	t.Run("a 100 KB key is refused before it is echoed", func(t *testing.T) {
		a := s.Post(0, "/v1/tickets/1/purchase", `{"buyerId":"a"}`, map[string]string{"Idempotency-Key": strings.Repeat("k", 100<<10)})
		if a.Status != http.StatusRequestHeaderFieldsTooLarge || a.Header.Get("Idempotency-Key") != "" {
			t.Fatalf("want 431 without the key echoed, got %d with %d bytes of key", a.Status, len(a.Header.Get("Idempotency-Key")))
		}
	})
	if a := s.Audit(); a.Orders != 0 {
		t.Fatalf("refused input must not write anything, found %d orders", a.Orders)
	}
}

func TestAPI_BuyerIDIsNFC_SoTwoSpellingsAreOneBuyer(t *testing.T) {
	s := newTestSale(t, 10, func(c *purchase.Config) { c.MaxPerBuyer = 1 })
	if a := s.Buy(1, "re\u0301my"); a.Status != http.StatusCreated || a.Order.BuyerID != "r\u00e9my" {
		t.Fatalf("decomposed é: want 201 stored as NFC, got %d %s %q", a.Status, a.Code, a.Order.BuyerID)
	}
	if a := s.Buy(2, "r\u00e9my"); a.Status != http.StatusForbidden || a.Code != "buyer_limit_reached" {
		t.Fatalf("the composed spelling is the same buyer at the limit: want 403 buyer_limit_reached, got %d %s", a.Status, a.Code)
	}
}

func TestAPI_ValidKey_IsEchoed(t *testing.T) {
	s := newTestSale(t, 10)
	a := s.BuyOn(0, 1, "echo", "key-1")
	if a.Status != http.StatusCreated || a.Header.Get("Idempotency-Key") != "key-1" {
		t.Fatalf("want 201 echoing key-1, got %d %q", a.Status, a.Header.Get("Idempotency-Key"))
	}
}
