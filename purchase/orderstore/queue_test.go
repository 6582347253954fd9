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

// queueReads is what the admitter's session has read of and written to the
// queue table so far, by Postgres's own statistics (flushed from the
// admitter's backend first).
func queueReads(t *testing.T, s *Store, a *Admitter) (read, updated int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := a.conn.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		t.Fatal(err)
	}
	// A statement of its own: the flush happens at its end.
	if _, err := a.conn.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	err := s.pool.QueryRow(ctx, `SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0), n_tup_upd
		FROM pg_stat_user_tables WHERE relname = 'queue'`).Scan(&read, &updated)
	if err != nil {
		t.Fatal(err)
	}
	return read, updated
}

// An admission step reads the rows it admits, not the queue: as many at
// 100,000 waiting as at 10,000, and the shuffle writes no row (issue 17).
func TestAdmitNext_RowsReadDoNotGrowWithTheQueue_ShuffleWritesNone(t *testing.T) {
	ctx := context.Background()
	reads := map[int64][2]int64{}
	for _, size := range []int64{10_000, 100_000} {
		s := newStore(t)
		if _, err := s.pool.Exec(ctx, `INSERT INTO queue (buyer_id, seq, slot)
			SELECT 'b' || s, s, s FROM (SELECT nextval('queue_seq') AS s FROM generate_series(1, $1::bigint)) AS g`, size); err != nil {
			t.Fatal(err)
		}
		if _, err := s.pool.Exec(ctx, `ANALYZE queue`); err != nil {
			t.Fatal(err)
		}
		a, err := s.TryAdmitter(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r0, u0 := queueReads(t, s, a)
		if _, err := a.Shuffle(ctx, []byte("seed")); err != nil {
			t.Fatal(err)
		}
		r1, u1 := queueReads(t, s, a)
		if u1 != u0 {
			t.Fatalf("%d waiting: the shuffle updated %d queue rows", size, u1-u0)
		}
		if _, got, err := a.AdmitNext(ctx, 100, reversed); err != nil || got != 100 {
			t.Fatalf("%d waiting: admitted %d (%v), want 100", size, got, err)
		}
		if _, err := a.CountWaiting(ctx); err != nil {
			t.Fatal(err)
		}
		r2, _ := queueReads(t, s, a)
		reads[size] = [2]int64{r1 - r0, r2 - r1}
		a.Close()
	}
	t.Logf("rows read (shuffle, admission step of 100 and waiting count) at 10,000 and 100,000 waiting: %v, %v", reads[10_000], reads[100_000])
	if reads[10_000] != reads[100_000] || reads[100_000][0] > 1 || reads[100_000][1] > 2*100+1 {
		t.Fatalf("rows read grow with the queue: %v at 10,000 waiting, %v at 100,000", reads[10_000], reads[100_000])
	}
}
