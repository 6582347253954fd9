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
