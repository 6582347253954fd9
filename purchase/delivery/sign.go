package delivery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// SecretPrefix starts every signing secret (Standard Webhooks v1).
const SecretPrefix = "whsec_"

// Headers of a delivery (Standard Webhooks v1).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// secretKey is the HMAC key of a whsec_ secret: the base64 after the
// prefix, decoded.
func secretKey(secret string) ([]byte, error) {
	if !strings.HasPrefix(secret, SecretPrefix) {
		return nil, errors.New("a signing secret must start with " + SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil {
		return nil, errors.New("a signing secret's part after " + SecretPrefix + " must be base64")
	}
	return key, nil
}

// Sign is the webhook-signature header of one delivery: "v1,<base64 of
// HMAC-SHA256(key, id.timestamp.body)>" for each secret, separated by
// spaces (several during a rotation; a receiver accepts a delivery when
// one of them verifies under a secret it has).
func Sign(secrets []string, id string, timestamp int64, body []byte) (string, error) {
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		key, err := secretKey(s)
		if err != nil {
			return "", err
		}
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac(key, id, timestamp, body)))
	}
	return strings.Join(sigs, " "), nil
}

func mac(key []byte, id string, timestamp int64, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(strconv.FormatInt(timestamp, 10)))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a delivery's signature header against secret: nil when one
// of its v1 signatures is the HMAC of id.timestamp.body under it. The
// receiver (flux-order receive, the tests) checks the timestamp's
// tolerance itself.
func Verify(secret, id string, timestamp int64, body []byte, header string) error {
	key, err := secretKey(secret)
	if err != nil {
		return err
	}
	want := mac(key, id, timestamp, body)
	for _, sig := range strings.Fields(header) {
		v, b64, ok := strings.Cut(sig, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrBadSignature
}

// ErrBadSignature: no signature of the header verifies.
var ErrBadSignature = errors.New("no webhook signature verifies")
