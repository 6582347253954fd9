package waitingroom

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/purchase/sale"
)

// memSpender spends ids in memory (the pods' is Redis, seatlock.SpendOnce).
type memSpender struct {
	mu    sync.Mutex
	spent map[string]bool
}

func (m *memSpender) SpendOnce(_ context.Context, id string, _ time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.spent[id] {
		return false, nil
	}
	m.spent[id] = true
	return true, nil
}

func powRoom(t *testing.T, difficulty int) *Room {
	t.Helper()
	q := New("s", []byte("0123456789abcdef0123456789abcdef"), Settings{AdmitPerSecond: 1, ProofOfWork: difficulty}, &slowJoins{},
		func() sale.Schedule { return sale.Schedule{} }, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	q.SetSpender(&memSpender{spent: map[string]bool{}})
	q.view.Store(&queueView{at: time.Now(), available: 10})
	return q
}

func challengeOf(t *testing.T, err error, want error) *ChallengeError {
	t.Helper()
	var ch *ChallengeError
	if !errors.As(err, &ch) || !errors.Is(err, want) || ch.Challenge == "" {
		t.Fatalf("want a challenge with %v, got %v", want, err)
	}
	return ch
}

// Issue 17, proof of work on join: a join without a proof gets a signed
// challenge; its solution lets one join of that buyer through, once; a
// replay, another buyer's, an expired or an easier challenge, a wrong nonce
// and a tampered challenge are refused, each with a fresh challenge.
func TestCheckProof_OneJoinPerSolvedChallenge(t *testing.T) {
	ctx := context.Background()
	q := powRoom(t, 8)
	if err := powRoom(t, 0).CheckProof(ctx, "alice", ""); err != nil {
		t.Fatalf("proof of work off: %v", err)
	}
	ch := challengeOf(t, q.CheckProof(ctx, "alice", ""), sale.ErrProofRequired)
	if ch.Difficulty != 8 {
		t.Fatalf("difficulty %d", ch.Difficulty)
	}
	proof, hashes := Solve(ch.Challenge, ch.Difficulty)
	if LeadingZeroBits(sha256.Sum256([]byte(proof))) < 8 || hashes < 1 {
		t.Fatalf("Solve: %q after %d hashes", proof, hashes)
	}
	if err := q.CheckProof(ctx, "bob", proof); !errors.Is(err, sale.ErrProofInvalid) {
		t.Fatalf("another buyer's proof: %v", err)
	}
	if err := q.CheckProof(ctx, "alice", proof); err != nil {
		t.Fatalf("the solved challenge: %v", err)
	}
	challengeOf(t, q.CheckProof(ctx, "alice", proof), sale.ErrProofInvalid) // a replay

	c, _, _ := strings.Cut(proof, ".")
	for name, bad := range map[string]string{
		"no nonce":     c,
		"empty nonce":  c + ".",
		"long nonce":   c + "." + strings.Repeat("1", MaxNonceLen+1),
		"tampered":     "x" + proof[1:],
		"wrong nonce":  wrongNonce(c, 8),
		"expired":      solved(q.signer.Challenge("alice", 8, time.Now().Add(-time.Second)), 8),
		"easier":       solved(q.signer.Challenge("alice", 4, time.Now().Add(time.Minute)), 4),
		"garbage":      "...",
		"another sale": solved(NewSigner([]byte("0123456789abcdef0123456789abcdef"), "other").Challenge("alice", 8, time.Now().Add(time.Minute)), 8),
	} {
		t.Run(name, func(t *testing.T) { challengeOf(t, q.CheckProof(ctx, "alice", bad), sale.ErrProofInvalid) })
	}
	// A harder challenge than asked is fine (the difficulty went down).
	if err := q.CheckProof(ctx, "alice", solved(q.signer.Challenge("alice", 10, time.Now().Add(time.Minute)), 10)); err != nil {
		t.Fatalf("a harder challenge: %v", err)
	}
}

// A room without its first view (just switched on) answers 503 to a good
// proof and spends nothing: the same proof lets the buyer in once the view
// is there. (Spent first, the 503 burnt the buyer's solve: seen on kind.)
func TestCheckProof_RoomNotReady_503SpendsNothing(t *testing.T) {
	ctx := context.Background()
	q := powRoom(t, 8)
	v := q.view.Swap(nil)
	proof := solved(challengeOf(t, q.CheckProof(ctx, "alice", ""), sale.ErrProofRequired).Challenge, 8)
	if err := q.CheckProof(ctx, "alice", proof); !errors.Is(err, sale.ErrUnavailable) {
		t.Fatalf("a room without its view: want 503 unavailable, got %v", err)
	}
	q.view.Store(v)
	if err := q.CheckProof(ctx, "alice", proof); err != nil {
		t.Fatalf("the same proof once the room is ready: %v", err)
	}
	challengeOf(t, q.CheckProof(ctx, "alice", proof), sale.ErrProofInvalid) // spent now
}

func solved(challenge string, d int) string { p, _ := Solve(challenge, d); return p }

// wrongNonce is a nonce whose hash does not meet d.
func wrongNonce(challenge string, d int) string {
	for n := 0; ; n++ {
		p := challenge + "." + strings.Repeat("9", 1+n%5) + string(rune('a'+n%26))
		if LeadingZeroBits(sha256.Sum256([]byte(p))) < d {
			return p
		}
	}
}

// The cost of a join at the documented difficulties, in Go (the load
// test's solver; docs/waiting-room.md has the browser's).
func BenchmarkSolve(b *testing.B) {
	s := NewSigner([]byte("0123456789abcdef0123456789abcdef"), "s")
	for _, d := range []int{12, 16, 18, 20} {
		b.Run(fmt.Sprintf("bits=%d", d), func(b *testing.B) {
			hashes := 0
			for b.Loop() {
				_, h := Solve(s.Challenge("alice", d, time.Now().Add(time.Minute)), d)
				hashes += h
			}
			b.ReportMetric(float64(hashes)/float64(b.N), "hashes/join")
		})
	}
}

// The buyers who come first, while the room's first view is being made (a
// pod just ready, or a room just switched on), wait for it: a join is not
// answered 503 for a view a few milliseconds away (hack/bench's first join
// was).
func TestFirstView_WaitsForTheRoomsFirstView(t *testing.T) {
	q := powRoom(t, 8)
	v := q.view.Swap(nil)
	go func() {
		time.Sleep(50 * time.Millisecond)
		q.view.Store(&queueView{at: time.Now(), available: v.available})
	}()
	got, err := q.firstView(context.Background(), time.Now())
	if err != nil || got == nil || got.available != v.available {
		t.Fatalf("want the first view once made, got %v %v", got, err)
	}
	// A view that exists but is stale is not waited for.
	q.view.Store(&queueView{at: time.Now().Add(-2 * staleView)})
	start := time.Now()
	if _, err := q.firstView(context.Background(), time.Now()); !errors.Is(err, sale.ErrUnavailable) || time.Since(start) > time.Second {
		t.Fatalf("a stale view: want 503 at once, got %v after %s", err, time.Since(start))
	}
}
