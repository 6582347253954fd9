// Package buyerauth verifies the buyers' identity tokens (issue 17: buyers
// are who the platform says). The sale's platform signs a JWT for each
// signed-in buyer; the pod verifies it locally, with no call to the
// identity provider: the signature against a JWKS document read from a
// file (in a cluster, a key of a mounted Secret the kubelet refreshes in
// place), and iss, aud, exp and nbf with a small clock skew. The buyer is
// the token's sub.
//
// The keys are re-read from the file while the pod runs (Follow), so a
// rotation of the JWKS needs no restart; the issuer and audiences are live
// settings (Set), from the FlashSale's spec.buyerAuth.jwt.
package buyerauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/flux-order/flux-order/purchase/sale"
)

// ClockSkew is how far a token's exp and nbf may be off the pod's clock.
const ClockSkew = 30 * time.Second

// MaxTokenLen bounds what is parsed: identity tokens are a few hundred
// bytes to a few KiB.
const MaxTokenLen = 8 << 10

// MaxJWKSBytes bounds the JWKS document read from the file.
const MaxJWKSBytes = 1 << 20

// FollowInterval is how often Follow re-reads the JWKS file. Reading a few
// KiB once a second costs nothing; the kubelet's own refresh of a Secret
// volume takes up to about a minute anyway.
const FollowInterval = time.Second

// algorithms are the signature algorithms accepted: asymmetric ones only.
// "none" and the HMAC family (HS256 with the public key as its secret) are
// refused when the token is parsed, before any key is looked at.
var algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// Settings are the live part: whom the tokens must come from and be for.
// Identity is on while Issuer is set.
type Settings struct {
	Issuer    string
	Audiences []string
}

// On says whether buyers must present an identity token.
func (s Settings) On() bool { return s.Issuer != "" }

// Verifier checks identity tokens against the keys of a JWKS file.
type Verifier struct {
	file     string
	settings atomic.Pointer[Settings]
	keys     atomic.Pointer[keySet]
	fileErr  atomic.Pointer[error]
	// gen counts the changes of settings and keys: a cached verdict is
	// good only for the generation it was made in.
	gen   atomic.Uint64
	cache verdicts
	log   *slog.Logger
	now   func() time.Time
}

// keySet is one version of the file: its bytes and the usable keys by kid.
type keySet struct {
	raw  []byte
	keys map[string]jose.JSONWebKey
}

// New returns a verifier with settings s and the keys of file ("": no
// keys, so identity cannot be on). A file that cannot be read or holds no
// usable key is an error: a pod should not start unable to verify anyone.
func New(file string, s Settings, log *slog.Logger) (*Verifier, error) {
	v := &Verifier{file: file, log: log, now: time.Now}
	v.Set(s)
	if file != "" {
		raw, err := readFile(file)
		if err != nil {
			return nil, err
		}
		ks, err := parseKeySet(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		v.keys.Store(ks)
	}
	return v, nil
}

// FollowFile names the file Follow reads, for a verifier made without one
// (its first version failed to load): Follow takes it once it is good.
func (v *Verifier) FollowFile(file string) { v.file = file }

// Set takes new settings (live: the next request uses them).
func (v *Verifier) Set(s Settings) {
	s.Audiences = slices.Clone(s.Audiences)
	v.settings.Store(&s)
	v.gen.Add(1)
}

// Settings are the settings in force.
func (v *Verifier) Settings() Settings { return *v.settings.Load() }

// On says whether buyers must present an identity token now.
func (v *Verifier) On() bool { return v.settings.Load().On() }

// KeyIDs lists the key ids loaded now (for logs and tests).
func (v *Verifier) KeyIDs() []string {
	ks := v.keys.Load()
	if ks == nil {
		return nil
	}
	ids := make([]string, 0, len(ks.keys))
	for id := range ks.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// errNoKeys: identity is on but this pod has no JWKS file (a pod started
// before spec.buyerAuth was added, being replaced): it refuses rather
// than sells to unverified buyers.
var errNoKeys = errors.New("identity is on but this pod has no JWKS file")

// Subject verifies the request's Authorization header values and returns
// the token's subject. It answers sale.ErrAuthRequired without a Bearer
// token, sale.ErrAuthInvalid (wrapping the reason, for logs) for a token
// that does not verify, and an unavailable error when the pod has no keys.
func (v *Verifier) Subject(authorization []string) (string, error) {
	if len(authorization) == 0 {
		return "", sale.ErrAuthRequired
	}
	if len(authorization) > 1 {
		return "", fmt.Errorf("%w: more than one Authorization header", sale.ErrAuthInvalid)
	}
	scheme, token, ok := strings.Cut(authorization[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", sale.ErrAuthRequired
	}
	ks := v.keys.Load()
	if ks == nil {
		return "", sale.Unavailable(sale.ErrIdentityUnavailable, errNoKeys)
	}
	token = strings.TrimSpace(token)
	gen, now := v.gen.Load(), v.now()
	digest := sha256.Sum256([]byte(token))
	if sub, ok := v.cache.get(digest, gen, now); ok {
		return sub, nil
	}
	sub, exp, err := v.verify(ks, token, now)
	if err != nil {
		return "", fmt.Errorf("%w: %w", sale.ErrAuthInvalid, err)
	}
	v.cache.put(digest, verdict{sub: sub, until: exp.Add(ClockSkew), gen: gen})
	return sub, nil
}

// verify checks token at now and returns its subject and expiry.
func (v *Verifier) verify(ks *keySet, token string, now time.Time) (string, time.Time, error) {
	var never time.Time
	if len(token) > MaxTokenLen {
		return "", never, errors.New("token too long")
	}
	tok, err := jwt.ParseSigned(token, algorithms)
	if err != nil {
		return "", never, err // malformed, or alg none / HS256 / any other not in algorithms
	}
	if len(tok.Headers) != 1 {
		return "", never, errors.New("not exactly one signature")
	}
	h := tok.Headers[0]
	key, ok := ks.keys[h.KeyID]
	if !ok {
		return "", never, fmt.Errorf("unknown kid %q", h.KeyID)
	}
	if key.Algorithm != "" && key.Algorithm != h.Algorithm {
		return "", never, fmt.Errorf("alg %s is not the key's %s", h.Algorithm, key.Algorithm)
	}
	var c jwt.Claims
	if err := tok.Claims(key.Key, &c); err != nil {
		return "", never, err
	}
	s := v.settings.Load()
	if s.Issuer == "" || len(s.Audiences) == 0 {
		return "", never, errors.New("no issuer or audience configured")
	}
	if c.Expiry == nil {
		return "", never, errors.New("no exp")
	}
	if c.Subject == "" {
		return "", never, errors.New("no sub")
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: s.Issuer, AnyAudience: s.Audiences, Time: now}, ClockSkew); err != nil {
		return "", never, err
	}
	return c.Subject, c.Expiry.Time(), nil
}

// maxVerdicts bounds the cache of verified tokens.
const maxVerdicts = 1 << 14

// verdict is a token verified in generation gen, good until until.
type verdict struct {
	sub   string
	until time.Time
	gen   uint64
}

// verdicts caches verified tokens: a buyer sends the same token with each
// request (join, hold, confirm, lookups, retries), and a signature check
// costs about 0.15 ms of CPU (ES256), a map lookup nothing. Only tokens
// that verified are kept, each until its exp (nbf had passed already);
// any change of keys or settings (a new generation) makes them miss.
// When full it is emptied: simpler than an LRU, and a refill costs one
// check per buyer. Tokens are keyed by their SHA-256, so an entry takes
// some 100 bytes whatever the token's size (a few MiB in all).
type verdicts struct {
	mu sync.RWMutex
	m  map[[sha256.Size]byte]verdict
}

func (c *verdicts) get(token [sha256.Size]byte, gen uint64, now time.Time) (string, bool) {
	c.mu.RLock()
	e, ok := c.m[token]
	c.mu.RUnlock()
	if !ok || e.gen != gen || !now.Before(e.until) {
		return "", false
	}
	return e.sub, true
}

func (c *verdicts) put(token [sha256.Size]byte, e verdict) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxVerdicts {
		c.m = make(map[[sha256.Size]byte]verdict, 1024)
	}
	c.m[token] = e
}

// FileError is why the last read of the JWKS file by Follow was not taken
// (nil: it was, or it had not changed).
func (v *Verifier) FileError() error {
	if e := v.fileErr.Load(); e != nil {
		return *e
	}
	return nil
}

func (v *Verifier) setFileError(err error) {
	if err == nil {
		v.fileErr.Store(nil)
		return
	}
	v.fileErr.Store(&err)
}

// Follow re-reads the JWKS file every interval until ctx ends, taking each
// new version that holds at least one usable key. A version that cannot be
// read or holds none is logged and the previous keys kept: a half-written
// or mistaken Secret never locks every buyer out.
func (v *Verifier) Follow(ctx context.Context, interval time.Duration) {
	if v.file == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastBad []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		raw, err := readFile(v.file)
		if err != nil {
			if v.FileError() == nil { // once per failure, not every second
				v.log.Warn("reading the JWKS file failed; keeping the keys loaded", "file", v.file, "err", err)
			}
			v.setFileError(err)
			continue
		}
		if bytes.Equal(lastBad, raw) {
			continue // still the version refused (and logged) before
		}
		if cur := v.keys.Load(); cur != nil && bytes.Equal(cur.raw, raw) {
			v.setFileError(nil)
			continue
		}
		ks, err := parseKeySet(raw)
		v.setFileError(err)
		if err != nil {
			lastBad = raw
			v.log.Error("the JWKS file holds no usable key; keeping the keys loaded", "file", v.file, "err", err)
			continue
		}
		lastBad = nil
		v.keys.Store(ks)
		v.gen.Add(1)
		v.log.Info("buyer identity keys loaded", "file", v.file, "kids", v.KeyIDs())
	}
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxJWKSBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, MaxJWKSBytes)
	}
	return raw, nil
}

// parseKeySet reads a JWKS document ({"keys": [...]}) and keeps its public
// signature keys. Private keys are refused outright (a Secret holding the
// signing key is a mistake worth stopping), symmetric ones and those
// marked for encryption are skipped.
//
// Its errors name a key by its place in the document, never by any of the
// document's text (a kid, a field's value): jwksSecretRef may name any
// Secret key of the namespace, and the errors reach the pod's logs
// (docs/security.md, Who is out there).
func parseKeySet(raw []byte) (*keySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		// Not err's text: go-jose's quote a key's kty or crv, and
		// encoding/json's type errors a number's digits.
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return nil, fmt.Errorf("not a JWKS document: not JSON (at byte %d)", syntax.Offset)
		}
		return nil, errors.New(`not a JWKS document: not {"keys": [...]}, or a key in it is not a JSON Web Key`)
	}
	ks := &keySet{raw: raw, keys: make(map[string]jose.JSONWebKey, len(set.Keys))}
	for i, k := range set.Keys {
		switch {
		case !k.IsPublic():
			return nil, fmt.Errorf("key %d of %d is a private or symmetric key: publish only public keys", i+1, len(set.Keys))
		case k.Use != "" && k.Use != "sig":
			continue
		}
		if _, dup := ks.keys[k.KeyID]; dup {
			return nil, fmt.Errorf("key %d of %d has the kid of an earlier key", i+1, len(set.Keys))
		}
		ks.keys[k.KeyID] = k
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("no public signature key")
	}
	return ks, nil
}
