package waitingroom

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"math/bits"
	"strconv"
	"strings"
	"time"

	"github.com/flux-order/flux-order/purchase/sale"
)

// Proof of work on join (issue 17, spec.waitingRoom.proofOfWork): a bot
// that joins under 10,000 buyer ids pays 10,000 solves.
//
// A join without a proof is answered a challenge, signed like the room's
// other tokens and bound to the buyer and an expiry:
//
//	challenge: 'w' | expires at, unix ms (8) | difficulty (1) | id (12) | tag (16), the tag also over the buyer id
//
// The client finds a nonce such that SHA-256(challenge "." nonce) starts
// with difficulty zero bits, and joins again with the header
// Flux-Order-Proof: <challenge>.<nonce>. The pod checks it without I/O,
// then spends the challenge's id in Redis (SET NX with the challenge's
// remaining life), so each challenge buys one join.

const (
	// MaxProofOfWork bounds the difficulty: 2^28 hashes is minutes of a
	// phone's time.
	MaxProofOfWork = 28
	// ChallengeTTL is how long a challenge may be solved and used.
	ChallengeTTL = 2 * time.Minute
	// MaxNonceLen bounds the nonce of a proof.
	MaxNonceLen = 32

	challengePrefix = 'w'
	challengeIDLen  = 12
	challengeFixed  = 1 + 8 + 1 + challengeIDLen
	challengeLen    = challengeFixed + tokenTagLen
)

// Spender spends a challenge id once (*seatlock.Locks): true the first
// time, false after.
type Spender interface {
	SpendOnce(ctx context.Context, id string, ttl time.Duration) (bool, error)
}

// ChallengeError is a join refused for its proof: Err is
// sale.ErrProofRequired or sale.ErrProofInvalid, Challenge the one to solve
// now, at Difficulty.
type ChallengeError struct {
	Challenge  string
	Difficulty int
	Err        error
}

func (e *ChallengeError) Error() string { return e.Err.Error() }
func (e *ChallengeError) Unwrap() error { return e.Err }

// spenderBox holds the room's Spender (SetSpender); without one, proofs
// are refused (the room cannot tell a replay).
type spenderBox struct{ s Spender }

// SetSpender gives the room where challenges are spent.
func (q *Room) SetSpender(s Spender) { q.spender.Store(&spenderBox{s}) }

// Challenge signs a new challenge for buyer at difficulty, valid until
// expires.
func (t *Signer) Challenge(buyer string, difficulty int, expires time.Time) string {
	b := make([]byte, challengeFixed, challengeLen)
	b[0] = challengePrefix
	binary.BigEndian.PutUint64(b[1:], uint64(expires.UnixMilli()))
	b[9] = byte(difficulty)
	_, _ = rand.Read(b[10:challengeFixed]) // never fails (crypto/rand)
	b = t.tag(b, b, []byte(buyer))
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseChallenge checks a challenge's tag for buyer and returns its
// expiry, difficulty and id.
func (t *Signer) parseChallenge(s, buyer string) (expires time.Time, difficulty int, id []byte, err error) {
	if len(s) != base64.RawURLEncoding.EncodedLen(challengeLen) {
		return time.Time{}, 0, nil, errBadToken
	}
	var b [challengeLen]byte
	if n, err := tokenEncoding.Decode(b[:], []byte(s)); err != nil || n != challengeLen || b[0] != challengePrefix {
		return time.Time{}, 0, nil, errBadToken
	}
	var want [tokenTagLen]byte
	if !hmac.Equal(b[challengeFixed:], t.tag(want[:0], b[:challengeFixed], []byte(buyer))) {
		return time.Time{}, 0, nil, errBadToken
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64(b[1:9]))), int(b[9]), append([]byte(nil), b[10:challengeFixed]...), nil
}

// LeadingZeroBits counts the zero bits a SHA-256 sum starts with.
func LeadingZeroBits(sum [sha256.Size]byte) int {
	n := 0
	for _, c := range sum {
		if c != 0 {
			return n + bits.LeadingZeros8(c)
		}
		n += 8
	}
	return n
}

// Solve finds the nonce of challenge at difficulty (what a client does;
// the load test and the tests use it) and returns the proof to send, and
// how many hashes it took.
func Solve(challenge string, difficulty int) (proof string, hashes int) {
	buf := make([]byte, 0, len(challenge)+1+20)
	buf = append(buf, challenge...)
	buf = append(buf, '.')
	for n := 0; ; n++ {
		b := strconv.AppendInt(buf, int64(n), 10)
		if LeadingZeroBits(sha256.Sum256(b)) >= difficulty {
			return string(b), n + 1
		}
	}
}

// CheckProof lets a join through when the room asks no proof of work, or
// when proof (the Flux-Order-Proof header) solves a live challenge of
// buyer's, at the difficulty in force, never used before. Otherwise it
// answers a *ChallengeError with a fresh challenge.
func (q *Room) CheckProof(ctx context.Context, buyer, proof string) error {
	difficulty := q.settings.Load().ProofOfWork
	if difficulty <= 0 {
		return nil
	}
	refuse := func(err error) error {
		return &ChallengeError{Challenge: q.signer.Challenge(buyer, difficulty, time.Now().Add(ChallengeTTL)), Difficulty: difficulty, Err: err}
	}
	if proof == "" {
		return refuse(sale.ErrProofRequired)
	}
	challenge, nonce, ok := strings.Cut(proof, ".")
	if !ok || nonce == "" || len(nonce) > MaxNonceLen {
		return refuse(sale.ErrProofInvalid)
	}
	now := time.Now()
	expires, d, id, err := q.signer.parseChallenge(challenge, buyer)
	if err != nil || !now.Before(expires) || d < difficulty || LeadingZeroBits(sha256.Sum256([]byte(proof))) < d {
		return refuse(sale.ErrProofInvalid)
	}
	box := q.spender.Load()
	if box == nil {
		return refuse(sale.ErrProofInvalid)
	}
	// A room that cannot take the join (no first view within
	// firstViewWait, or a stale one) answers 503 before the proof is
	// spent: the buyer retries with the same proof, not a new solve.
	if _, err := q.firstView(ctx, now); err != nil {
		return err
	}
	fresh, err := box.s.SpendOnce(ctx, hex.EncodeToString(id), expires.Sub(now)+time.Second)
	if err != nil {
		return sale.Unavailable(sale.ErrSeatStoreUnavailable, err)
	}
	if !fresh {
		return refuse(sale.ErrProofInvalid) // a replay
	}
	q.metrics.proofs.Inc()
	return nil
}
