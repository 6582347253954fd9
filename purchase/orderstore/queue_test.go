package orderstore

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// reversed is a stand-in for the shuffle's π⁻¹: slot s of a prequeue of p
// holds seq p+1-s.
func reversed(_ []byte, p, slot int64) int64 { return p + 1 - slot }

func joinN(t *testing.T, s *Store, prefix string, n int) {
	t.Helper()
	buyers := make([]string, n)
	for i := range buyers {
		buyers[i] = fmt.Sprintf("%s%d", prefix, i+1)
	}
	if _, err := s.JoinQueue(context.Background(), buyers); err != nil {
		t.Fatal(err)
	}
}

func admitted(t *testing.T, s *Store) map[int64]string {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), `SELECT slot, buyer_id FROM queue_admitted`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	var slot int64
	var b string
	for rows.Next() {
		if err := rows.Scan(&slot, &b); err != nil {
			t.Fatal(err)
		}
		got[slot] = b
	}
	return got
}

// A shuffled prequeue is admitted in the order seqAt gives, over the seqs
// no row holds, and then the latecomers in join order; the shuffle wrote no
// row, and each admitted buyer is recorded at their slot.
func TestAdmitNext_ShuffledPrequeue_BySeqAtOverGapsThenJoinOrder(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	joinN(t, s, "b", 30) // seqs 1..30
	if _, err := s.pool.Exec(ctx, `DELETE FROM queue WHERE seq BETWEEN 10 AND 19`); err != nil {
		t.Fatal(err) // as if their joins had failed
	}
	a, err := s.TryAdmitter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	st, err := a.Shuffle(ctx, []byte("seed"))
	if err != nil || st.PrequeueSeq != 30 || string(st.ShuffleSeed) != "seed" {
		t.Fatalf("shuffle: %+v, %v", st, err)
	}
	var moved int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM queue WHERE slot <> seq`).Scan(&moved); err != nil || moved != 0 {
		t.Fatalf("the shuffle rewrote %d slots (%v)", moved, err)
	}
	joinN(t, s, "late", 5) // seqs 31..35

	for _, step := range []struct {
		n, admitted, serving int64
	}{
		{7, 7, 7},    // slots 1..7: seqs 30..24
		{7, 7, 24},   // slots 8..11: seqs 23..20; 12..21 are gaps; 22..24: seqs 9..7
		{10, 10, 34}, // slots 25..30: seqs 6..1; then seqs 31..34 at their seq
		{10, 1, 35},
		{10, 0, 35},
	} {
		st, got, err := a.AdmitNext(ctx, step.n, reversed)
		if err != nil || got != step.admitted || st.ServingSlot != step.serving {
			t.Fatalf("admit %d: got %d, serving %d (%v); want %d, serving %d", step.n, got, st.ServingSlot, err, step.admitted, step.serving)
		}
	}
	want := map[int64]string{}
	for slot := int64(1); slot <= 30; slot++ {
		if seq := 31 - slot; seq < 10 || seq > 19 {
			want[slot] = fmt.Sprintf("b%d", seq)
		}
	}
	for seq := int64(31); seq <= 35; seq++ {
		want[seq] = fmt.Sprintf("late%d", seq-30)
	}
	got := admitted(t, s)
	if len(got) != len(want) {
		t.Fatalf("queue_admitted: %v, want %v", got, want)
	}
	for slot, b := range want {
		if got[slot] != b {
			t.Fatalf("slot %d: admitted %q, want %q", slot, got[slot], b)
		}
	}
	stored, _, err := s.QueueSnapshot(ctx, 0, time.Time{}, 10)
	if err != nil || stored.Admitted != int64(len(want)) {
		t.Fatalf("state %+v (%v), want %d admitted", stored, err, len(want))
	}
}

// A stretch of seqs no row holds, longer than one step may look at, is
// passed over a bounded stretch per step: no step reads it whole.
func TestAdmitNext_LongStretchOfGaps_PassedOverInBoundedSteps(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	const p = maxShuffledScan + 1000
	if _, err := s.pool.Exec(ctx, `INSERT INTO queue (buyer_id, seq, slot)
		SELECT 'b' || s, s, s FROM (SELECT nextval('queue_seq') AS s FROM generate_series(1, $1::bigint)) AS g`, p); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM queue WHERE seq > 1 AND seq < $1`, p); err != nil {
		t.Fatal(err)
	}
	a, err := s.TryAdmitter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Shuffle(ctx, []byte("seed")); err != nil {
		t.Fatal(err)
	}
	identity := func(_ []byte, _, slot int64) int64 { return slot }
	var steps []int64
	for range 3 {
		st, got, err := a.AdmitNext(ctx, 5, identity)
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, got, st.ServingSlot)
	}
	// 1 at slot 1, then the gaps up to the bound; the rest of the gaps and
	// the last; nothing.
	if want := []int64{1, maxShuffledScan, 1, p, 0, p}; !slices.Equal(steps, want) {
		t.Fatalf("(admitted, serving) per step: %v, want %v", steps, want)
	}
	waiting, err := a.CountWaiting(ctx)
	if err != nil || waiting != 0 {
		t.Fatalf("waiting %d (%v), want 0", waiting, err)
	}
}

// The waiting count is the places left behind the serving slot, read from
// the last seq: a seq no row holds counts as a place, as positions count it.
func TestCountWaiting_PlacesBehindTheServingSlot(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	joinN(t, s, "b", 10)
	a, err := s.TryAdmitter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for _, step := range []struct{ admit, waiting int64 }{{0, 10}, {4, 6}, {6, 0}} {
		if step.admit > 0 {
			if _, _, err := a.AdmitNext(ctx, step.admit, reversed); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := a.CountWaiting(ctx); err != nil || got != step.waiting {
			t.Fatalf("after admitting %d: waiting %d (%v), want %d", step.admit, got, err, step.waiting)
		}
	}
}
