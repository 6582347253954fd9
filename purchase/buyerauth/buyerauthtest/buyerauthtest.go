// Package buyerauthtest plays a platform's identity provider for tests,
// the load test and local sales: a signing key, its public JWKS document
// (what a sale's Secret holds) and signed identity tokens.
package buyerauthtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Key is an ES256 signing key with its key id.
type Key struct {
	jwk    jose.JSONWebKey
	signer jose.Signer
}

// NewKey makes a new P-256 key named kid.
func NewKey(kid string) *Key {
	pk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	k, err := keyOf(jose.JSONWebKey{Key: pk, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	if err != nil {
		panic(err)
	}
	return k
}

func keyOf(jwk jose.JSONWebKey) (*Key, error) {
	if jwk.IsPublic() || !jwk.Valid() {
		return nil, fmt.Errorf("key %q is not a private signing key", jwk.KeyID)
	}
	alg := jose.SignatureAlgorithm(jwk.Algorithm)
	if alg == "" {
		alg = jose.ES256
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jwk}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	return &Key{jwk: jwk, signer: s}, nil
}

// LoadKey reads a private key written by PrivateJWK (a JWK with its kid
// and alg), as flux-order loadtest --jwt-key does.
func LoadKey(file string) (*Key, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(raw, &jwk); err != nil {
		return nil, fmt.Errorf("%s: not a JWK: %w", file, err)
	}
	return keyOf(jwk)
}

// KeyID is the key's kid.
func (k *Key) KeyID() string { return k.jwk.KeyID }

// PublicKey is the key's public half.
func (k *Key) PublicKey() *ecdsa.PublicKey { return &k.jwk.Key.(*ecdsa.PrivateKey).PublicKey }

// PrivateJWK is the private key as a JWK (for LoadKey).
func (k *Key) PrivateJWK() []byte {
	b, err := json.Marshal(k.jwk)
	if err != nil {
		panic(err)
	}
	return b
}

// JWKS is the public JWKS document of keys: what a sale's Secret holds.
func JWKS(keys ...*Key) []byte {
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, k.jwk.Public())
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}

// Sign signs claims (jwt.Claims and any other claim structs) as a JWT.
func (k *Key) Sign(claims ...any) string {
	b := jwt.Signed(k.signer)
	for _, c := range claims {
		b = b.Claims(c)
	}
	s, err := b.Serialize()
	if err != nil {
		panic(err)
	}
	return s
}

// Token is a token for subject from issuer to audience, valid for ttl
// from now.
func (k *Key) Token(issuer, audience, subject string, ttl time.Duration) string {
	now := time.Now()
	return k.Sign(jwt.Claims{
		Issuer: issuer, Audience: jwt.Audience{audience}, Subject: subject,
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(ttl)),
	})
}
