package loadtest

import (
	"bytes"
	"strconv"
	"sync"
	"time"

	"github.com/flux-order/flux-order/internal/flagerr"
	"github.com/flux-order/flux-order/purchase/buyerauth/buyerauthtest"
)

// Tokens signs the buyers' identity tokens for a sale with buyer identity
// (spec.buyerAuth; --jwt-key): buyer-N's token has sub buyer-N, so the
// bodies' buyerId still match. Each buyer's token is signed once, on first
// use, valid for TTL.
type Tokens struct {
	key              *buyerauthtest.Key
	issuer, audience string
	ttl              time.Duration
	mu               sync.Mutex
	byBuyer          map[int64]string
}

// DefaultTokenTTL is the tokens' life: longer than any test.
const DefaultTokenTTL = 6 * time.Hour

// LoadTokens reads the signing key (a private JWK with its kid, as
// buyerauthtest writes it: hack/localsale and the tests do) from keyFile.
func LoadTokens(keyFile, issuer, audience string, ttl time.Duration) (*Tokens, error) {
	switch {
	case issuer == "":
		return nil, flagerr.New("jwt-issuer", "is required with --jwt-key (the sale's spec.buyerAuth.jwt.issuer)")
	case audience == "":
		return nil, flagerr.New("jwt-audience", "is required with --jwt-key (one of the sale's spec.buyerAuth.jwt.audiences)")
	}
	key, err := buyerauthtest.LoadKey(keyFile)
	if err != nil {
		return nil, flagerr.New("jwt-key", "%v", err)
	}
	return NewTokens(key, issuer, audience, ttl), nil
}

// NewTokens signs with key.
func NewTokens(key *buyerauthtest.Key, issuer, audience string, ttl time.Duration) *Tokens {
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	return &Tokens{key: key, issuer: issuer, audience: audience, ttl: ttl, byBuyer: map[int64]string{}}
}

// For is buyer-<buyer>'s token ("" on a nil Tokens: no identity).
func (t *Tokens) For(buyer int64) string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	tok, ok := t.byBuyer[buyer]
	if !ok {
		tok = t.key.Token(t.issuer, t.audience, "buyer-"+strconv.FormatInt(buyer, 10), t.ttl)
		t.byBuyer[buyer] = tok
	}
	return tok
}

// forBody is the token of the buyer a request body names
// ({"buyerId":"buyer-N",…}), "" without identity or buyer.
func (t *Tokens) forBody(body []byte) string {
	if t == nil {
		return ""
	}
	const head = `"buyerId":"buyer-`
	i := bytes.Index(body, []byte(head))
	if i < 0 {
		return ""
	}
	rest := body[i+len(head):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	n, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil {
		return ""
	}
	return t.For(n)
}
