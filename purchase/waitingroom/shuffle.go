package waitingroom

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
)

// shuffleSlot is a Random queue's prequeue shuffle: a permutation of
// 1..n, keyed by seed, mapping a join sequence number to a slot. It is a
// balanced Feistel network of 8 rounds (4 leave a bias on small queues that
// the chi-square test sees) over the smallest power-of-4 domain holding n,
// cycle-walked back into 1..n (fewer than 4 rounds of walking on average),
// so every pod computes any buyer's slot from the seed alone: a poll stays
// free of I/O even for a shuffled queue.
func shuffleSlot(seed []byte, n, seq int64) int64 {
	if n <= 1 || seq < 1 || seq > n {
		return seq
	}
	half := (bits.Len64(uint64(n-1)) + 1) / 2 // bits per half
	mask := uint64(1)<<half - 1
	x := uint64(seq - 1)
	for {
		l, r := x>>half, x&mask
		for round := range 8 {
			l, r = r, l^(feistelRound(seed, round, r)&mask)
		}
		x = l<<half | r
		if x < uint64(n) {
			return int64(x) + 1
		}
	}
}

func feistelRound(seed []byte, round int, r uint64) uint64 {
	var in [64]byte
	n := copy(in[:32], seed)
	in[n] = byte(round)
	binary.BigEndian.PutUint64(in[n+1:], r)
	sum := sha256.Sum256(in[:n+9])
	return binary.BigEndian.Uint64(sum[:8])
}
