package waitingroom

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"

	"github.com/flux-order/flux-order/purchase/orderstore"
)

// Slot is the place in admission order of the buyer who joined with seq,
// as the queue's state st fixes it: π(seq) for a shuffled prequeue (seqs
// 1..st.PrequeueSeq), seq itself otherwise. Nothing in Postgres holds it:
// the shuffle writes only the seed, and every pod (and the admitter, with
// ShuffledSeq) computes places from it.
func Slot(st orderstore.QueueState, seq int64) int64 {
	if st.ShuffleSeed == nil {
		return seq
	}
	return shuffleSlot(st.ShuffleSeed, st.PrequeueSeq, seq)
}

// ShuffledSeq is Slot's inverse over a shuffled prequeue: the seq of the
// buyer placed at slot (1..prequeue) by the shuffle keyed by seed. The
// admitter evaluates it for the slots it is about to admit, so a step
// reads the rows it admits and no others, whatever the queue's length.
func ShuffledSeq(seed []byte, prequeue, slot int64) int64 {
	return shuffleSeq(seed, prequeue, slot)
}

// shuffleSlot is a Random queue's prequeue shuffle: a permutation π of
// 1..n, keyed by seed, mapping a join sequence number to a slot. It is a
// balanced Feistel network of 8 rounds (4 leave a bias on small queues that
// the chi-square test sees) over the smallest power-of-4 domain holding n,
// cycle-walked back into 1..n (fewer than 4 rounds of walking on average),
// so every pod computes any buyer's slot from the seed alone: a poll stays
// free of I/O even for a shuffled queue.
func shuffleSlot(seed []byte, n, seq int64) int64 { return feistelWalk(seed, n, seq, true) }

// shuffleSeq is π⁻¹: the rounds run backwards, cycle-walked alike (the
// walk of the inverse retraces the forward walk's cycle the other way).
func shuffleSeq(seed []byte, n, slot int64) int64 { return feistelWalk(seed, n, slot, false) }

func feistelWalk(seed []byte, n, x int64, forward bool) int64 {
	if n <= 1 || x < 1 || x > n {
		return x
	}
	half := (bits.Len64(uint64(n-1)) + 1) / 2 // bits per half
	mask := uint64(1)<<half - 1
	v := uint64(x - 1)
	for {
		l, r := v>>half, v&mask
		for i := range feistelRounds {
			if forward {
				l, r = r, l^(feistelRound(seed, i, r)&mask)
			} else {
				l, r = r^(feistelRound(seed, feistelRounds-1-i, l)&mask), l
			}
		}
		v = l<<half | r
		if v < uint64(n) {
			return int64(v) + 1
		}
	}
}

const feistelRounds = 8

func feistelRound(seed []byte, round int, r uint64) uint64 {
	var in [64]byte
	n := copy(in[:32], seed)
	in[n] = byte(round)
	binary.BigEndian.PutUint64(in[n+1:], r)
	sum := sha256.Sum256(in[:n+9])
	return binary.BigEndian.Uint64(sum[:8])
}
