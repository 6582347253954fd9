package waitingroom

import (
	"crypto/rand"
	"encoding/binary"
	"testing"
)

func TestShuffleSlot_IsAPermutationOfOneToN(t *testing.T) {
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	for _, n := range []int64{1, 2, 3, 4, 5, 7, 16, 17, 100, 1000, 4097} {
		seen := make([]bool, n+1)
		for seq := int64(1); seq <= n; seq++ {
			slot := shuffleSlot(seed, n, seq)
			if slot < 1 || slot > n || seen[slot] {
				t.Fatalf("n=%d: seq %d maps to slot %d, out of range or taken twice", n, seq, slot)
			}
			seen[slot] = true
		}
	}
	if got := shuffleSlot(seed, 10, 11); got != 11 {
		t.Fatalf("a seq after the prequeue keeps its place: want 11, got %d", got)
	}
}

// Over many seeds, each buyer of the prequeue lands in each slot equally
// often: a chi-square test (9 degrees of freedom) at the 0.1% level.
func TestShuffleSlot_UniformOverSeeds_ChiSquare(t *testing.T) {
	const n, trials = 10, 20_000
	for _, seq := range []int64{1, 5, 10} {
		var counts [n + 1]int
		seed := make([]byte, 32)
		for i := range trials {
			binary.BigEndian.PutUint64(seed, uint64(i))
			counts[shuffleSlot(seed, n, seq)]++
		}
		expected := float64(trials) / n
		chi2 := 0.0
		for slot := 1; slot <= n; slot++ {
			d := float64(counts[slot]) - expected
			chi2 += d * d / expected
		}
		if chi2 > 27.88 { // χ²(9) at p = 0.001
			t.Fatalf("seq %d: slots %v are not uniform (χ² = %.1f > 27.88)", seq, counts[1:], chi2)
		}
	}
}

// The admitter walks slots back to seqs (ShuffledSeq), polls walk seqs to
// slots (Slot): the two are inverse bijections of 1..n, for small and
// on-sale sized prequeues alike.
func TestShuffledSeq_InvertsShuffleSlot(t *testing.T) {
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	for _, n := range []int64{2, 3, 5, 17, 1000, 4097, 1_000_000, 1<<40 + 3} {
		for i := int64(0); i < 2000; i++ {
			x := 1 + (i*7919+i*i*104729)%n // spread over 1..n
			if got := ShuffledSeq(seed, n, shuffleSlot(seed, n, x)); got != x {
				t.Fatalf("n=%d: seq %d → slot %d → seq %d", n, x, shuffleSlot(seed, n, x), got)
			}
			if got := shuffleSlot(seed, n, ShuffledSeq(seed, n, x)); got != x {
				t.Fatalf("n=%d: slot %d → seq %d → slot %d", n, x, ShuffledSeq(seed, n, x), got)
			}
		}
	}
	if got := ShuffledSeq(seed, 10, 11); got != 11 {
		t.Fatalf("a slot after the prequeue is its own seq: want 11, got %d", got)
	}
}

// One seed, one permutation, on every pod (the seed's bytes, not the
// slice); another seed, another permutation.
func TestShuffleSlot_DeterministicPerSeed_DiffersAcrossSeeds(t *testing.T) {
	const n = 1_000_000
	perm := func(seed []byte) []int64 {
		out := make([]int64, 64)
		for i := range out {
			out[i] = shuffleSlot(seed, n, int64(i)*15_625+1)
		}
		return out
	}
	seen := map[string]bool{}
	for i := range 50 {
		seed := make([]byte, 32)
		_, _ = rand.Read(seed)
		a, b := perm(seed), perm(append([]byte(nil), seed...))
		for j := range a {
			if a[j] != b[j] {
				t.Fatalf("seed %d: seq %d lands on %d, then on %d", i, j*15_625+1, a[j], b[j])
			}
		}
		key := string(binary.BigEndian.AppendUint64(nil, uint64(a[0]))) + string(binary.BigEndian.AppendUint64(nil, uint64(a[1])))
		if seen[key] {
			t.Fatalf("two of 50 seeds place the first buyers alike: %v", a[:2])
		}
		seen[key] = true
		fixed := 0
		for j, slot := range a {
			if slot == int64(j)*15_625+1 {
				fixed++
			}
		}
		if fixed > 2 {
			t.Fatalf("seed %d leaves %d of 64 sampled buyers in their join place", i, fixed)
		}
	}
}
