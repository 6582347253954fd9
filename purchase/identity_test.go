package purchase_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/buyerauth"
	"github.com/flux-order/flux-order/purchase/buyerauth/buyerauthtest"
	"github.com/flux-order/flux-order/purchase/httpapi"
	"github.com/flux-order/flux-order/purchase/purchasetest"
	"github.com/flux-order/flux-order/purchase/statusreport"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

const (
	idIssuer   = "https://id.example.com/"
	idAudience = "flux-order-test"
)

// writeJWKSFile writes keys' JWKS to file as the kubelet updates a Secret
// volume: a new file renamed over the old.
func writeJWKSFile(t testing.TB, file string, keys ...*buyerauthtest.Key) {
	t.Helper()
	if err := os.WriteFile(file+".new", buyerauthtest.JWKS(keys...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(file+".new", file); err != nil {
		t.Fatal(err)
	}
}

// withIdentity turns buyer identity on with key's JWKS in a file it
// returns (to rotate).
func withIdentity(t testing.TB, key *buyerauthtest.Key) (func(*purchase.Config), string) {
	file := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKSFile(t, file, key)
	return func(c *purchase.Config) {
		c.BuyerJWKSFile = file
		c.BuyerAuth = buyerauth.Settings{Issuer: idIssuer, Audiences: []string{idAudience}}
	}, file
}

// call sends method path with body and headers to pod 0, and returns the
// status, the problem code (if any) and the raw body.
func (s *testSale) call(method, path, body string, h map[string]string) (int, string, []byte) {
	s.T.Helper()
	req, _ := http.NewRequest(method, s.Pods[0].URL+path, strings.NewReader(body))
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		s.T.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var p httpapi.Problem
	if resp.Header.Get("Content-Type") == "application/problem+json" {
		_ = json.Unmarshal(raw, &p)
	}
	return resp.StatusCode, p.Code, raw
}

func bearerOf(tok string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + tok}
}

// TestIdentity_WholeFlow: with identity on, alice joins the queue with her
// token, is admitted, buys with the pass in Flux-Order-Pass, holds and
// confirms, and reads her orders; nobody without her token, or with bob's,
// can act for her or read them.
func TestIdentity_WholeFlow(t *testing.T) {
	key := buyerauthtest.NewKey("k1")
	identity, _ := withIdentity(t, key)
	s := newQueueSale(t, 10, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 100}), withHolds(time.Minute), identity)
	alice := key.Token(idIssuer, idAudience, "alice", time.Hour)
	bob := key.Token(idIssuer, idAudience, "bob", time.Hour)

	if st, code, _ := s.call("POST", "/v1/queue", `{"buyerId":"alice"}`, nil); st != 401 || code != "auth_required" {
		t.Fatalf("join without a token: %d %s", st, code)
	}
	if st, code, _ := s.call("POST", "/v1/queue", `{"buyerId":"alice"}`, bearerOf(bob)); st != 403 || code != "buyer_mismatch" {
		t.Fatalf("bob joining as alice: %d %s", st, code)
	}
	// The buyer is the subject: no body needed.
	st, code, raw := s.call("POST", "/v1/queue", "", bearerOf(alice))
	var q httpapi.QueueBody
	if st >= 300 || json.Unmarshal(raw, &q) != nil {
		t.Fatalf("alice joins: %d %s %s", st, code, raw)
	}
	var pass string
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "alice is admitted", testservers.Holds(func() bool {
		a := s.poll(0, q.QueueID)
		pass = a.Body.Pass
		return pass != ""
	}))

	// The pass goes in its own header; Authorization is the identity token.
	if st, code, _ := s.call("POST", "/v1/tickets/1/purchase", "", bearerOf(alice)); st != 401 || code != "pass_required" {
		t.Fatalf("purchase without the pass: %d %s", st, code)
	}
	if st, code, _ := s.call("POST", "/v1/tickets/1/purchase", "", map[string]string{"Authorization": "Bearer " + pass}); st != 401 || code != "auth_invalid" {
		t.Fatalf("the pass as the Bearer token: %d %s", st, code)
	}
	withPass := func(tok string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + tok, httpapi.PassHeader: pass}
	}
	// The pass is bound to alice: bob's token with it is refused.
	if st, code, _ := s.call("POST", "/v1/tickets/1/purchase", "", withPass(bob)); st != 403 || code != "pass_invalid" {
		t.Fatalf("bob with alice's pass: %d %s", st, code)
	}
	st, code, raw = s.call("POST", "/v1/tickets/1/purchase", `{"buyerId":"alice"}`, withPass(alice))
	var o struct{ OrderID, BuyerID string }
	if st != 201 || json.Unmarshal(raw, &o) != nil || o.BuyerID != "alice" {
		t.Fatalf("alice buys: %d %s %s", st, code, raw)
	}

	// Her order: hers to read, nobody else's.
	for _, c := range []struct {
		h    map[string]string
		st   int
		code string
	}{{nil, 401, "auth_required"}, {bearerOf(bob), 404, "order_not_found"}, {bearerOf(alice), 200, ""}} {
		if st, code, _ := s.call("GET", "/v1/orders/"+o.OrderID, "", c.h); st != c.st || code != c.code {
			t.Fatalf("GET her order with %v: %d %s, want %d %s", c.h, st, code, c.st, c.code)
		}
	}

	// A hold and its confirmation, as alice.
	st, code, raw = s.call("POST", "/v1/tickets/2/hold", "", withPass(alice))
	var h httpapi.HoldBody
	if st != 201 || json.Unmarshal(raw, &h) != nil || h.BuyerID != "alice" {
		t.Fatalf("alice holds: %d %s %s", st, code, raw)
	}
	hold := "/v1/holds/" + h.HoldID.String()
	if st, code, _ := s.call("DELETE", hold, "", bearerOf(bob)); st != 404 || code != "hold_not_found" {
		t.Fatalf("bob releases alice's hold: %d %s", st, code)
	}
	if st, code, _ := s.call("POST", hold+"/confirm", `{"paymentRef":"pi_1"}`, bearerOf(bob)); st != 404 && st != 410 {
		t.Fatalf("bob confirms alice's hold: %d %s", st, code)
	}
	if st, code, raw := s.call("POST", hold+"/confirm", `{"paymentRef":"pi_1"}`, bearerOf(alice)); st != 201 || !strings.Contains(string(raw), `"buyerId":"alice"`) {
		t.Fatalf("alice confirms: %d %s %s", st, code, raw)
	}
	if a := s.Audit(); a.Orders != 2 {
		t.Fatalf("%d orders in the database, want alice's 2", a.Orders)
	}
}

// TestIdentity_JWKSRotation_NoRestart rewrites the JWKS file as the kubelet
// does when the Secret changes: the running pod takes the new key, then
// drops the old one, without a restart.
func TestIdentity_JWKSRotation_NoRestart(t *testing.T) {
	oldKey, newKey := buyerauthtest.NewKey("2026-11"), buyerauthtest.NewKey("2026-12")
	identity, file := withIdentity(t, oldKey)
	s := newTestSale(t, 10, identity)
	oldTok := oldKey.Token(idIssuer, idAudience, "alice", time.Hour)
	newTok := newKey.Token(idIssuer, idAudience, "alice", time.Hour)
	buys := func(tok string, seat string) func() (int, string) {
		return func() (int, string) {
			st, code, _ := s.call("POST", "/v1/tickets/"+seat+"/purchase", "", bearerOf(tok))
			return st, code
		}
	}
	if st, code := buys(newTok, "1")(); st != 401 || code != "auth_invalid" {
		t.Fatalf("a key not yet published: %d %s", st, code)
	}
	writeJWKSFile(t, file, oldKey, newKey)
	testservers.Eventually(t, 10*time.Second, 50*time.Millisecond, "the pod takes the new key", testservers.Holds(func() bool {
		st, _ := buys(newTok, "1")()
		return st == 201
	}))
	if st, code := buys(oldTok, "2")(); st != 201 {
		t.Fatalf("the old key, still published: %d %s", st, code)
	}
	writeJWKSFile(t, file, newKey)
	testservers.Eventually(t, 10*time.Second, 50*time.Millisecond, "the pod drops the old key", testservers.Holds(func() bool {
		_, code := buys(oldTok, "3")()
		return code == "auth_invalid"
	}))
	if st, code := buys(newTok, "4")(); st != 201 {
		t.Fatalf("the new key after the old one went: %d %s", st, code)
	}
}

// TestIdentity_LiveSettings: the FlashSale's spec.buyerAuth reaches a
// running pod (Apply): a new audience refuses tokens for the old one, and
// removing buyerAuth turns identity off, the body naming the buyer again.
func TestIdentity_LiveSettings(t *testing.T) {
	key := buyerauthtest.NewKey("k1")
	identity, _ := withIdentity(t, key)
	s := newTestSale(t, 10, identity)
	pod := s.Pods[0].Svc
	tok := key.Token(idIssuer, idAudience, "alice", time.Hour)
	if st, code, _ := s.call("POST", "/v1/tickets/1/purchase", "", bearerOf(tok)); st != 201 {
		t.Fatalf("before: %d %s", st, code)
	}
	live := statusreport.Settings{Tickets: 10, LockTTL: time.Second}
	live.BuyerAuth = buyerAuthSpec(idIssuer, "another-audience")
	pod.Apply(live)
	if st, code, _ := s.call("POST", "/v1/tickets/2/purchase", "", bearerOf(tok)); st != 401 || code != "auth_invalid" {
		t.Fatalf("a token for the old audience: %d %s", st, code)
	}
	live.BuyerAuth = nil
	pod.Apply(live)
	if st, code, raw := s.call("POST", "/v1/tickets/2/purchase", `{"buyerId":"mallory"}`, nil); st != 201 || !strings.Contains(string(raw), "mallory") {
		t.Fatalf("identity off: %d %s %s", st, code, raw)
	}
}

// TestIdentity_StartRefusesABadJWKSFile: a pod does not start unable to
// verify anyone.
func TestIdentity_StartRefusesABadJWKSFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newTestSale(t, 1)
	cfg := s.Cfg
	cfg.BuyerJWKSFile = file
	cfg.BuyerAuth = buyerauth.Settings{Issuer: idIssuer, Audiences: []string{idAudience}}
	_, _, stop, err := purchasetest.Serve(context.Background(), cfg, purchasetest.Discard())
	if err == nil {
		stop()
		t.Fatal("a pod started with a JWKS file holding no key")
	}
	if !strings.Contains(err.Error(), "buyer-jwks-file") {
		t.Fatalf("the error does not name the flag: %v", err)
	}
}

// buyerAuthSpec is a FlashSale's spec.buyerAuth (its Secret is not read by
// the pod: the file is).
func buyerAuthSpec(issuer string, audiences ...string) *salesv1alpha1.BuyerAuthSpec {
	return &salesv1alpha1.BuyerAuthSpec{JWT: salesv1alpha1.JWTAuthSpec{Issuer: issuer, Audiences: audiences}}
}
