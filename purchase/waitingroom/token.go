package waitingroom

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
	"sync"
	"time"

	"github.com/flux-order/flux-order/purchase/sale"
)

// Queue ids and passes are self-contained tokens: a payload and an
// HMAC-SHA256 tag (truncated to 128 bits) under a key derived from the
// sale's secret with its own label and the sale's name, so neither can be
// forged, carried to another sale, or confused with an order-id key. A pod
// checks them from the signature alone, with no I/O.
//
//	queue id: 'q' | seq (8) | joined at, unix µs (8) | buyer id | tag (16)
//	pass:     'p' | expires at, unix ms (8) | tag (16), the tag also over the buyer id
//
// A pass does not carry its buyer id: the purchase names the buyer, and the
// tag only verifies for that buyer, so another buyer's pass is refused like
// a forged one.

const (
	tokenTagLen   = 16
	queueIDPrefix = 'q'
	passPrefix    = 'p'
	queueIDFixed  = 1 + 8 + 8
	passLen       = 1 + 8 + tokenTagLen
	// maxQueueIDLen bounds what a poll decodes (base64 of the largest id).
	maxQueueIDLen = (queueIDFixed + sale.MaxBuyerIDLen + tokenTagLen + 2) / 3 * 4
)

var errBadToken = errors.New("bad token")

// tokenEncoding decodes strictly: unused trailing bits must be zero, so a
// token has exactly one spelling.
var tokenEncoding = base64.RawURLEncoding.Strict()

// Signer signs and checks the waiting room's tokens.
type Signer struct {
	macs sync.Pool // hash.Hash keyed with the derived key
}

func NewSigner(secret []byte, saleName string) *Signer {
	key := sale.DeriveKey(secret, "flux-order waiting room tokens v1", saleName)
	return &Signer{macs: sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

func (t *Signer) tag(dst []byte, parts ...[]byte) []byte {
	m := t.macs.Get().(hash.Hash)
	m.Reset()
	for _, p := range parts {
		m.Write(p)
	}
	var sum [sha256.Size]byte
	dst = append(dst, m.Sum(sum[:0])[:tokenTagLen]...)
	t.macs.Put(m)
	return dst
}

// Ticket is what a queue id says.
type Ticket struct {
	Buyer    string
	Seq      int64
	JoinedAt time.Time
}

func (t *Signer) QueueID(q Ticket) string {
	b := make([]byte, queueIDFixed, queueIDFixed+len(q.Buyer)+tokenTagLen)
	b[0] = queueIDPrefix
	binary.BigEndian.PutUint64(b[1:], uint64(q.Seq))
	binary.BigEndian.PutUint64(b[9:], uint64(q.JoinedAt.UnixMicro()))
	b = append(b, q.Buyer...)
	b = t.tag(b, b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (t *Signer) ParseQueueID(s string) (Ticket, error) {
	if len(s) > maxQueueIDLen {
		return Ticket{}, errBadToken
	}
	b, err := tokenEncoding.DecodeString(s)
	if err != nil || len(b) < queueIDFixed+1+tokenTagLen || b[0] != queueIDPrefix {
		return Ticket{}, errBadToken
	}
	body, tag := b[:len(b)-tokenTagLen], b[len(b)-tokenTagLen:]
	if !hmac.Equal(tag, t.tag(nil, body)) {
		return Ticket{}, errBadToken
	}
	return Ticket{
		Seq:      int64(binary.BigEndian.Uint64(body[1:])),
		JoinedAt: time.UnixMicro(int64(binary.BigEndian.Uint64(body[9:]))),
		Buyer:    string(body[queueIDFixed:]),
	}, nil
}

// Pass is the buyer's admission, valid until expires (truncated to ms).
func (t *Signer) Pass(buyer string, expires time.Time) string {
	b := make([]byte, 9, passLen)
	b[0] = passPrefix
	binary.BigEndian.PutUint64(b[1:], uint64(expires.UnixMilli()))
	b = t.tag(b, b, []byte(buyer))
	return base64.RawURLEncoding.EncodeToString(b)
}

// CheckPass verifies a pass for buyer at now.
func (t *Signer) CheckPass(pass, buyer string, now time.Time) error {
	_, err := t.checkPass(pass, buyer, now)
	return err
}

// checkPass verifies a pass for buyer at now and returns its expiry.
func (t *Signer) checkPass(pass, buyer string, now time.Time) (time.Time, error) {
	if len(pass) != base64.RawURLEncoding.EncodedLen(passLen) {
		return time.Time{}, errBadToken
	}
	var b [passLen]byte
	if n, err := tokenEncoding.Decode(b[:], []byte(pass)); err != nil || n != passLen || b[0] != passPrefix {
		return time.Time{}, errBadToken
	}
	var want [tokenTagLen]byte
	if !hmac.Equal(b[9:], t.tag(want[:0], b[:9], []byte(buyer))) {
		return time.Time{}, errBadToken
	}
	exp := int64(binary.BigEndian.Uint64(b[1:9]))
	if now.UnixMilli() >= exp {
		return time.Time{}, errBadToken
	}
	return time.UnixMilli(exp), nil
}
