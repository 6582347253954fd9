package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/flux-order/flux-order/purchase/sale"
)

// FuzzDecodePurchase: whatever the body and key, decoding never panics;
// whatever it accepts is a valid request, and encoding/json reads the same
// object to the same buyer (before NFC). The seeds run in every `go test`.
func FuzzDecodePurchase(f *testing.F) {
	for _, seed := range []struct{ body, key string }{
		{`{"buyerId":"alice"}`, ""},
		{`{"buyerId":"alice"}`, "k-1"},
		{` { "buyerId" : "al\u0069ce" } `, ""},
		{`{"buyerId":""}`, ""},
		{`{"buyerId":null}`, ""},
		{`{"buyerId":"a","extra":1}`, ""},
		{`{"buyerId":"a","buyerId":"b"}`, ""},
		{`{"BUYERID":"a"}`, ""},
		{`{"buyerId":"a"}{"buyerId":"b"}`, ""},
		{`[]`, ""},
		{`null`, ""},
		{`{"buyerId":"\u0000"}`, ""},
		{`{"buyerId":"\ud800"}`, ""},
		{`{"buyerId":"\ud83d\ude00"}`, ""},
		{`{"buyerId":"alice\u200b"}`, ""},
		{`{"buyerId":"   "}`, ""},
		{`{"buyerId":"e\u0301"}`, ""},
		{`{"buyerId":"` + strings.Repeat("é", 100) + `"}`, ""},
		{"{\"buyerId\":\"\xff\"}", ""},
		{"\xff\xfe", "\x00"},
		{`{"buyerId":1e999}`, ""},
		{`{"buyer\u0049d":"a"}`, ""},
		{`{"buyerId\u0000":"a"}`, ""},
		{`{"buyerId":"a b"}`, ""},
	} {
		f.Add([]byte(seed.body), seed.key)
	}
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		if key != "" {
			got, err := idempotencyKey(http.Header{idemKeyHeader: {key}})
			switch {
			case err != nil && !errors.Is(err, sale.ErrInvalidRequest):
				t.Fatalf("every refusal of a key must be invalid_request, got %v", err)
			case err == nil && (got != key || len(got) > MaxIdemKeyLen):
				t.Fatalf("accepted a bad key %q", key)
			}
		}
		buyer, err := decodePurchase(body)
		if err != nil {
			if !errors.Is(err, sale.ErrInvalidRequest) {
				t.Fatalf("every refusal must be invalid_request, got %v", err)
			}
			return
		}
		if buyer == "" || len(buyer) > sale.MaxBuyerIDLen || !utf8.ValidString(buyer) || !norm.NFC.IsNormalString(buyer) {
			t.Fatalf("accepted a bad buyerId %q", buyer)
		}
		for _, r := range buyer {
			if !unicode.In(r, visible...) || r == utf8.RuneError {
				t.Fatalf("accepted %U in buyerId %q", r, buyer)
			}
		}
		var std struct {
			BuyerID string `json:"buyerId"`
		}
		if err := json.Unmarshal(body, &std); err != nil || norm.NFC.String(std.BuyerID) != buyer {
			t.Fatalf("encoding/json reads %q as %q (%v), we read %q", body, std.BuyerID, err, buyer)
		}
	})
}

// A buyer id of printable ASCII skips NFC and the per-character checks:
// every such id must get the answer the general path gives it.
func TestNormalizeBuyerID_ASCIIAsTheGeneralPath(t *testing.T) {
	for c := byte(0x20); c <= 0x7e; c++ {
		for _, v := range []string{string(c), "a" + string(c) + "b", string(c) + "a", "a" + string(c)} {
			got, err := normalizeBuyerID(v)
			want := norm.NFC.String(v)
			ok := want == v && visibleID(v) && !unicode.IsSpace(rune(v[0])) && !unicode.IsSpace(rune(v[len(v)-1]))
			if (err == nil) != ok || (err == nil && got != want) {
				t.Fatalf("%q: got %q, %v; the general path accepts it: %v", v, got, err, ok)
			}
		}
	}
}
