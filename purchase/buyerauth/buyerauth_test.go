package buyerauth_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/buyerauth"
	"github.com/flux-order/flux-order/purchase/buyerauth/buyerauthtest"
	"github.com/flux-order/flux-order/purchase/sale"
)

const (
	issuer   = "https://id.example.com/"
	audience = "flux-order-demo"
)

var settings = buyerauth.Settings{Issuer: issuer, Audiences: []string{"other", audience}}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func writeJWKS(t *testing.T, file string, keys ...*buyerauthtest.Key) {
	t.Helper()
	// As the kubelet does: a new file renamed over the old one.
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, buyerauthtest.JWKS(keys...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

func newVerifier(t *testing.T, keys ...*buyerauthtest.Key) (*buyerauth.Verifier, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, file, keys...)
	v, err := buyerauth.New(file, settings, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return v, file
}

func bearer(tok string) []string { return []string{"Bearer " + tok} }

func claims(sub string, exp time.Time) jwt.Claims {
	return jwt.Claims{Issuer: issuer, Audience: jwt.Audience{audience}, Subject: sub, Expiry: jwt.NewNumericDate(exp)}
}

func TestSubject_ValidToken(t *testing.T) {
	k := buyerauthtest.NewKey("k1")
	v, _ := newVerifier(t, k)
	sub, err := v.Subject(bearer(k.Token(issuer, audience, "alice", time.Minute)))
	if err != nil || sub != "alice" {
		t.Fatalf("Subject = %q, %v; want alice", sub, err)
	}
	// Any of the configured audiences will do; the scheme is case-insensitive.
	sub, err = v.Subject([]string{"bearer " + k.Token(issuer, "other", "bob", time.Minute)})
	if err != nil || sub != "bob" {
		t.Fatalf("Subject = %q, %v; want bob", sub, err)
	}
}

func TestSubject_Refusals(t *testing.T) {
	k := buyerauthtest.NewKey("k1")
	stranger := buyerauthtest.NewKey("k1") // same kid, another key
	v, _ := newVerifier(t, k)
	now := time.Now()
	pub, err := x509.MarshalPKIXPublicKey(k.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	pubJWK, _ := json.Marshal(jose.JSONWebKey{Key: k.PublicKey(), KeyID: "k1"})

	noExp := claims("alice", now)
	noExp.Expiry = nil
	noSub := claims("", now.Add(time.Minute))
	notYet := claims("alice", now.Add(time.Hour))
	notYet.NotBefore = jwt.NewNumericDate(now.Add(2 * buyerauth.ClockSkew))

	cases := []struct {
		name  string
		auth  []string
		want  error
		cause string
	}{
		{"no header", nil, sale.ErrAuthRequired, ""},
		{"another scheme", []string{"Basic YWxpY2U6eA=="}, sale.ErrAuthRequired, ""},
		{"two headers", []string{"Bearer a", "Bearer b"}, sale.ErrAuthInvalid, ""},
		{"garbage", bearer("not.a.jwt"), sale.ErrAuthInvalid, ""},
		{"wrong issuer", bearer(k.Token("https://evil.example.com/", audience, "alice", time.Minute)), sale.ErrAuthInvalid, "issuer"},
		{"wrong audience", bearer(k.Token(issuer, "another-sale", "alice", time.Minute)), sale.ErrAuthInvalid, "audience"},
		{"expired", bearer(k.Sign(claims("alice", now.Add(-2*buyerauth.ClockSkew)))), sale.ErrAuthInvalid, "expired"},
		{"not yet valid", bearer(k.Sign(notYet)), sale.ErrAuthInvalid, "not valid yet"},
		{"no exp", bearer(k.Sign(noExp)), sale.ErrAuthInvalid, "no exp"},
		{"no sub", bearer(k.Sign(noSub)), sale.ErrAuthInvalid, "no sub"},
		{"signed by another key", bearer(stranger.Sign(claims("alice", now.Add(time.Minute)))), sale.ErrAuthInvalid, ""},
		{"unknown kid", bearer(buyerauthtest.NewKey("k9").Sign(claims("alice", now.Add(time.Minute)))), sale.ErrAuthInvalid, "unknown kid"},
		{"alg none", bearer(unsigned(t, "k1", claims("alice", now.Add(time.Minute)))), sale.ErrAuthInvalid, "algorithm"},
		{"HS256 with the public key's PEM as secret", bearer(hmacSigned(t, pubPEM, "k1", claims("alice", now.Add(time.Minute)))), sale.ErrAuthInvalid, "algorithm"},
		{"HS256 with the public JWK as secret", bearer(hmacSigned(t, pubJWK, "k1", claims("alice", now.Add(time.Minute)))), sale.ErrAuthInvalid, "algorithm"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sub, err := v.Subject(c.auth)
			if !errors.Is(err, c.want) {
				t.Fatalf("Subject = %q, %v; want %v", sub, err, c.want)
			}
			if c.cause != "" && !contains(err.Error(), c.cause) {
				t.Errorf("error %q does not say %q", err, c.cause)
			}
		})
	}
	// Within the clock skew, a just-expired token still passes.
	if _, err := v.Subject(bearer(k.Sign(claims("alice", now.Add(-buyerauth.ClockSkew/2))))); err != nil {
		t.Errorf("a token expired %v ago (within the skew) was refused: %v", buyerauth.ClockSkew/2, err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// unsigned is a token with alg none, as an attacker crafts it.
func unsigned(t *testing.T, kid string, c jwt.Claims) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT", "kid": kid})
	p, _ := json.Marshal(c)
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h) + "." + enc(p) + "."
}

// hmacSigned is a token signed HS256 with secret: the attack that works on
// a verifier that lets the token pick its algorithm and hands it the key.
func hmacSigned(t *testing.T, secret []byte, kid string, c jwt.Claims) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSubject_NoKeysIsUnavailable(t *testing.T) {
	v, err := buyerauth.New("", settings, quiet)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Subject(bearer("x.y.z"))
	if !errors.Is(err, sale.ErrUnavailable) {
		t.Fatalf("Subject without keys = %v, want unavailable", err)
	}
}

func TestSettingsAreLive(t *testing.T) {
	k := buyerauthtest.NewKey("k1")
	v, _ := newVerifier(t, k)
	tok := bearer(k.Token(issuer, audience, "alice", time.Minute))
	if _, err := v.Subject(tok); err != nil {
		t.Fatal(err)
	}
	v.Set(buyerauth.Settings{Issuer: issuer, Audiences: []string{"next-sale"}})
	if _, err := v.Subject(tok); !errors.Is(err, sale.ErrAuthInvalid) {
		t.Fatalf("after the audience changed: %v, want auth_invalid", err)
	}
	v.Set(buyerauth.Settings{})
	if v.On() {
		t.Fatal("On with no issuer")
	}
}

func TestNew_RefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	k := buyerauthtest.NewKey("k1")
	for name, content := range map[string][]byte{
		"not json":    []byte("{"),
		"no keys":     []byte(`{"keys":[]}`),
		"private key": []byte(`{"keys":[` + string(k.PrivateJWK()) + `]}`),
		"symmetric":   []byte(`{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}`),
	} {
		file := filepath.Join(dir, "jwks.json")
		if err := os.WriteFile(file, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := buyerauth.New(file, settings, quiet); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := buyerauth.New(filepath.Join(dir, "missing"), settings, quiet); err == nil {
		t.Error("New accepted a missing file")
	}
}

// jwksSecretRef may name any Secret key of the namespace: a file refused
// is described without any of its text (it reaches the pod's logs).
func TestNew_RefusalNamesNothingOfTheFile(t *testing.T) {
	dir := t.TempDir()
	const secret = "s3cr3tvalue"
	private := string(buyerauthtest.NewKey(secret).PrivateJWK())
	pub := string(buyerauthtest.JWKS(buyerauthtest.NewKey(secret)))
	for name, content := range map[string]string{
		"a PEM key":             "-----BEGIN PRIVATE KEY-----\n" + secret + "\n-----END PRIVATE KEY-----\n",
		"a private key's kid":   `{"keys":[` + private + `]}`,
		"a kty":                 `{"keys":[{"kty":"` + secret + `","kid":"a"}]}`,
		"a curve":               `{"keys":[{"kty":"EC","crv":"` + secret + `","x":"AA","y":"AA"}]}`,
		"a number":              `{"keys":` + "12345678901" + `}`,
		"a kid twice":           strings.Replace(pub, `]}`, ","+strings.TrimSuffix(strings.TrimPrefix(pub, `{"keys":[`), `]}`)+`]}`, 1),
		"a symmetric key's kid": `{"keys":[{"kty":"oct","kid":"` + secret + `","k":"c2VjcmV0"}]}`,
	} {
		file := filepath.Join(dir, "jwks.json")
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := buyerauth.New(file, settings, quiet)
		if err == nil {
			t.Errorf("%s: New accepted it", name)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, secret) || strings.Contains(msg, "12345678901") || strings.Contains(msg, "BEGIN") {
			t.Errorf("%s: the error repeats the file: %s", name, msg)
		}
	}
}

// TestFollow_Rotation rotates the JWKS file as a platform does (publish the
// new key beside the old, then drop the old): each step is taken without a
// restart, and a broken file keeps the keys loaded.
func TestFollow_Rotation(t *testing.T) {
	oldKey, newKey := buyerauthtest.NewKey("2026-11"), buyerauthtest.NewKey("2026-12")
	v, file := newVerifier(t, oldKey)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); v.Follow(ctx, 20*time.Millisecond) }()
	defer func() { cancel(); <-done }()

	oldTok := bearer(oldKey.Token(issuer, audience, "alice", time.Hour))
	newTok := bearer(newKey.Token(issuer, audience, "alice", time.Hour))
	accepts := func(tok []string) func() bool {
		return func() bool { _, err := v.Subject(tok); return err == nil }
	}
	if accepts(newTok)() {
		t.Fatal("a key not yet published verified")
	}
	writeJWKS(t, file, oldKey, newKey)
	testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, "the new key is taken", testservers.Holds(accepts(newTok)))
	if !accepts(oldTok)() {
		t.Fatal("the old key stopped verifying while still published")
	}
	writeJWKS(t, file, newKey)
	testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, "the old key is dropped", testservers.Holds(func() bool { return !accepts(oldTok)() }))

	// A broken document keeps the keys loaded.
	if err := os.WriteFile(file, []byte(`{"keys": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, "the broken file is read", testservers.Holds(func() bool { return v.FileError() != nil }))
	if !accepts(newTok)() {
		t.Fatal("a broken JWKS file dropped the loaded keys")
	}
}

// BenchmarkSubject is the CPU one request's token check costs (ES256):
// first, the signature check; repeat, a token verified before.
func BenchmarkSubject(b *testing.B) {
	k := buyerauthtest.NewKey("k1")
	file := filepath.Join(b.TempDir(), "jwks.json")
	if err := os.WriteFile(file, buyerauthtest.JWKS(k), 0o600); err != nil {
		b.Fatal(err)
	}
	v, err := buyerauth.New(file, settings, quiet)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("first", func(b *testing.B) {
		toks := make([][]string, b.N)
		for i := range toks {
			toks[i] = bearer(k.Token(issuer, audience, "buyer-"+strconv.Itoa(i), time.Hour))
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if _, err := v.Subject(toks[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("repeat", func(b *testing.B) {
		tok := bearer(k.Token(issuer, audience, "alice", time.Hour))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Subject(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A verified token is remembered (cheap repeats), but only until its exp:
// the cache never lets an expired token through.
func TestSubject_CachedVerdictEndsAtExp(t *testing.T) {
	k := buyerauthtest.NewKey("k1")
	v, _ := newVerifier(t, k)
	now := time.Now()
	v.SetNow(func() time.Time { return now })
	tok := bearer(k.Sign(claims("alice", now.Add(time.Minute))))
	for range 2 {
		if _, err := v.Subject(tok); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(time.Minute + buyerauth.ClockSkew + time.Second)
	if _, err := v.Subject(tok); !errors.Is(err, sale.ErrAuthInvalid) {
		t.Fatalf("an expired token, verified before: %v, want auth_invalid", err)
	}
}
