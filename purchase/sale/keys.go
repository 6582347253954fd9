package sale

import (
	"crypto/hmac"
	"crypto/sha256"
)

// MinSecretLen is the shortest sale secret a pod accepts (the operator
// generates 32 characters: 192 random bits).
const MinSecretLen = 32

// DeriveKey is the key for one use of the sale secret: HMAC-SHA256 under
// the secret of label, a NUL and context. Every use has its own label, so
// no message one use signs (an order id from a buyer's chosen id and key)
// can be another's key or tag.
func DeriveKey(secret []byte, label, context string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write([]byte(context))
	return m.Sum(nil)
}
