package httpapi

import (
	"net/http"
	"slices"
	"testing"

	"github.com/flux-order/flux-order/purchase/sale"
)

// identityFixture is an API with buyer identity on: token "alice-token"
// is alice's, "bob-token" bob's, "blank-token" has an invisible subject.
func identityFixture() *fixture {
	return newFixtureWith(&fakeIdentity{on: true, subs: map[string]string{
		"alice-token": "alice", "bob-token": "bob", "blank-token": "alice\u200b",
	}})
}

func authAs(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

// Every route that acts for a buyer: purchases, holds, confirm, release,
// hold and order lookups, joins.
var identityRoutes = []struct{ method, path, body string }{
	{http.MethodPost, "/v1/tickets/1/purchase", `{"buyerId":"alice"}`},
	{http.MethodPost, "/v1/purchase", `{"buyerId":"alice"}`},
	{http.MethodPost, "/v1/tickets/2/hold", `{"buyerId":"alice"}`},
	{http.MethodPost, "/v1/holds", `{"buyerId":"alice"}`},
	{http.MethodPost, "/v1/holds/" + fakeHold.ID.String() + "/confirm", `{"buyerId":"alice","paymentRef":"pi_1"}`},
	{http.MethodDelete, "/v1/holds/" + fakeHold.ID.String(), ""},
	{http.MethodGet, "/v1/holds/" + fakeHold.ID.String(), ""},
	{http.MethodGet, "/v1/orders/" + fakeOrder.ID.String(), ""},
	{http.MethodPost, "/v1/queue", `{"buyerId":"alice"}`},
	{http.MethodDelete, "/v1/queue/q-1", ""},
}

// With identity on, each of them answers 401 auth_required without a
// token and 401 auth_invalid with a bad one, with the RFC 6750 challenge,
// and reaches neither checkout nor the waiting room.
func TestIdentity_EveryBuyerRouteNeedsAToken(t *testing.T) {
	cases := []struct {
		name, code, challenge string
		header                map[string]string
	}{
		{"no token", "auth_required", `Bearer realm="flux-order"`, nil},
		{"another scheme", "auth_required", `Bearer realm="flux-order"`, map[string]string{"Authorization": "Basic YWxpY2U6eA=="}},
		{"a token that does not verify", "auth_invalid", `Bearer realm="flux-order", error="invalid_token"`, authAs("forged")},
		{"a subject that is no usable buyer id", "auth_invalid", `Bearer realm="flux-order", error="invalid_token"`, authAs("blank-token")},
	}
	for _, rt := range identityRoutes {
		for _, c := range cases {
			t.Run(rt.method+" "+rt.path+"/"+c.name, func(t *testing.T) {
				f := identityFixture()
				f.queue.on = true
				p, resp := readProblem(t, f.do(rt.method, rt.path, rt.body, c.header))
				if resp.StatusCode != http.StatusUnauthorized || p.Code != c.code {
					t.Fatalf("got %d %+v, want 401 %s", resp.StatusCode, p, c.code)
				}
				if got := resp.Header.Get("WWW-Authenticate"); got != c.challenge {
					t.Errorf("WWW-Authenticate %q, want %q", got, c.challenge)
				}
				if f.checkout.calls != 0 || f.queue.joined != "" || f.queue.left != "" {
					t.Errorf("a request without a valid token reached checkout (%d calls), joined (%q) or left (%q)", f.checkout.calls, f.queue.joined, f.queue.left)
				}
			})
		}
	}
}

// A leave with identity is the subject's: the waiting room is asked to
// give up the place only if the queue id is that buyer's.
func TestIdentity_LeaveIsTheSubjects(t *testing.T) {
	f := identityFixture()
	f.queue.on = true
	if rec := f.do(http.MethodDelete, "/v1/queue/q-1", "", authAs("bob-token")); rec.Code != http.StatusNoContent {
		t.Fatalf("DELETE with bob's token: %d, want 204", rec.Code)
	}
	if f.queue.left != "q-1" || f.queue.leftAs != "bob" {
		t.Fatalf("the waiting room was asked to let %q leave as %q, want q-1 as bob", f.queue.left, f.queue.leftAs)
	}
}

// The public routes stay public with identity on.
func TestIdentity_PublicRoutesNeedNone(t *testing.T) {
	f := identityFixture()
	for _, path := range []string{"/v1/sale", "/v1/availability", "/v1/tickets/1"} {
		if rec := f.do(http.MethodGet, path, "", nil); rec.Code != http.StatusOK {
			t.Errorf("GET %s without a token: %d, want 200", path, rec.Code)
		}
	}
}

// Without identity nothing changes: the body names the buyer.
func TestIdentity_OffBodyNamesTheBuyer(t *testing.T) {
	for _, f := range []*fixture{newFixture(), newFixtureWith(&fakeIdentity{on: false})} {
		if rec := f.do(http.MethodPost, "/v1/tickets/1/purchase", `{"buyerId":"mallory"}`, nil); rec.Code != http.StatusCreated {
			t.Fatalf("purchase without identity: %d", rec.Code)
		}
		if f.checkout.purchase.BuyerID != "mallory" {
			t.Fatalf("buyer %q, want the body's mallory", f.checkout.purchase.BuyerID)
		}
	}
}

// With identity the buyer is the token's subject: the body may leave it
// out or repeat it; naming anyone else is 403 buyer_mismatch, before
// checkout.
func TestIdentity_BuyerIsTheSubject(t *testing.T) {
	for _, path := range []string{"/v1/tickets/1/purchase", "/v1/purchase"} {
		for _, body := range []string{"", `{"buyerId":"alice"}`} {
			f := identityFixture()
			if rec := f.do(http.MethodPost, path, body, authAs("alice-token")); rec.Code != http.StatusCreated {
				t.Fatalf("POST %s %q: %d %s", path, body, rec.Code, rec.Body)
			}
			if f.checkout.purchase.BuyerID != "alice" {
				t.Fatalf("POST %s %q: buyer %q, want alice", path, body, f.checkout.purchase.BuyerID)
			}
		}
	}
	f := identityFixture()
	if rec := f.do(http.MethodPost, "/v1/tickets/2/hold", "", authAs("alice-token")); rec.Code != http.StatusCreated || f.checkout.hold.BuyerID != "alice" {
		t.Fatalf("hold: %d, buyer %q", rec.Code, f.checkout.hold.BuyerID)
	}
	if rec := f.do(http.MethodPost, "/v1/holds/"+fakeHold.ID.String()+"/confirm", `{"paymentRef":"pi_1"}`, authAs("alice-token")); rec.Code != http.StatusCreated || f.checkout.confirm != [2]string{"alice", "pi_1"} {
		t.Fatalf("confirm: %d %s, confirmed %q", rec.Code, rec.Body, f.checkout.confirm)
	}
	f.queue.on = true
	if rec := f.do(http.MethodPost, "/v1/queue", "", authAs("alice-token")); rec.Code >= 300 || f.queue.joined != "alice" {
		t.Fatalf("join: %d, joined %q", rec.Code, f.queue.joined)
	}

	for _, rt := range identityRoutes {
		if rt.body == "" {
			continue
		}
		t.Run("mismatch "+rt.path, func(t *testing.T) {
			f := identityFixture()
			f.queue.on = true
			p, resp := readProblem(t, f.do(rt.method, rt.path, rt.body, authAs("bob-token"))) // bodies name alice
			if resp.StatusCode != http.StatusForbidden || p.Code != "buyer_mismatch" {
				t.Fatalf("got %d %+v, want 403 buyer_mismatch", resp.StatusCode, p)
			}
			if f.checkout.calls != 0 || f.queue.joined != "" {
				t.Fatal("a mismatched buyer reached checkout or joined")
			}
		})
	}
}

// With identity the waiting room's pass comes in Flux-Order-Pass and is
// checked for the subject; without, from Authorization as before.
func TestIdentity_PassMovesToItsOwnHeader(t *testing.T) {
	f := identityFixture()
	f.queue.on = true
	h := authAs("alice-token")
	h[PassHeader] = "the-pass"
	for _, path := range []string{"/v1/tickets/1/purchase", "/v1/tickets/2/hold"} {
		if rec := f.do(http.MethodPost, path, "", h); rec.Code != http.StatusCreated {
			t.Fatalf("%s: %d", path, rec.Code)
		}
		pc := f.queue.passChecked
		if pc.header != PassHeader || !slices.Equal(pc.values, []string{"the-pass"}) || pc.buyer != "alice" {
			t.Fatalf("%s: pass checked %+v, want %s [the-pass] for alice", path, pc, PassHeader)
		}
	}

	f = newFixture()
	f.queue.on = true
	if rec := f.do(http.MethodPost, "/v1/tickets/1/purchase", `{"buyerId":"bob"}`, map[string]string{"Authorization": "Bearer the-pass"}); rec.Code != http.StatusCreated {
		t.Fatalf("without identity: %d", rec.Code)
	}
	if pc := f.queue.passChecked; pc.header != "Authorization" || !slices.Equal(pc.values, []string{"Bearer the-pass"}) || pc.buyer != "bob" {
		t.Fatalf("without identity the pass was checked as %+v", pc)
	}

	// A refused pass still answers its own problem under identity.
	f = identityFixture()
	f.queue.on, f.queue.passErr = true, sale.ErrPassRequired
	if p, _ := readProblem(t, f.do(http.MethodPost, "/v1/tickets/1/purchase", "", authAs("alice-token"))); p.Code != "pass_required" {
		t.Fatalf("got %+v, want pass_required", p)
	}
}

// With identity an order or hold of another buyer answers as if it did not
// exist, and cannot be released; its own buyer reads and releases it.
func TestIdentity_OnlyTheBuyerSeesTheirOrdersAndHolds(t *testing.T) {
	hold := "/v1/holds/" + fakeHold.ID.String()
	order := "/v1/orders/" + fakeOrder.ID.String()
	for _, c := range []struct{ method, path, code string }{
		{http.MethodGet, order, "order_not_found"},
		{http.MethodGet, hold, "hold_not_found"},
		{http.MethodDelete, hold, "hold_not_found"},
	} {
		f := identityFixture()
		p, resp := readProblem(t, f.do(c.method, c.path, "", authAs("bob-token")))
		if resp.StatusCode != http.StatusNotFound || p.Code != c.code {
			t.Fatalf("%s %s as bob: %d %+v, want 404 %s", c.method, c.path, resp.StatusCode, p, c.code)
		}
		if c.method == http.MethodDelete && f.checkout.calls != 1 {
			t.Fatalf("bob's release of alice's hold made %d checkout calls, want the lookup only", f.checkout.calls)
		}
	}
	f := identityFixture()
	for _, c := range []struct {
		method, path string
		want         int
	}{{http.MethodGet, order, 200}, {http.MethodGet, hold, 200}, {http.MethodDelete, hold, 204}} {
		if rec := f.do(c.method, c.path, "", authAs("alice-token")); rec.Code != c.want {
			t.Fatalf("%s %s as alice: %d, want %d", c.method, c.path, rec.Code, c.want)
		}
	}
}
