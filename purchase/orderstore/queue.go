package orderstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flux-order/flux-order/internal/opcount"
)

// The waiting room's queries (migrations 00004 and 00006). Joins are written in
// batches (one statement for many buyers); admission is one pod's job at a
// time, under queueAdmitterLockID.

// queueAdmitterLockID is the session advisory lock the admitting pod holds
// ("fo-queue").
const queueAdmitterLockID = 0x666f2d7175657565

// Joined is one buyer's place in the queue.
type Joined struct {
	BuyerID  string
	Seq      int64
	JoinedAt time.Time
}

// JoinQueue enqueues buyers in the order given (buyers already in the queue
// keep their place) and returns every one's place. One round trip: the
// INSERT and the SELECT run as one implicit transaction.
//
// The INSERT takes the queue's ROW EXCLUSIVE lock before it draws any seq,
// and an admission step takes SHARE (see AdmitNext): so no row can become
// visible below a slot the admitter has already passed.
func (s *Store) JoinQueue(ctx context.Context, buyers []string) (_ map[string]Joined, err error) {
	defer s.errs.Deferred("join_queue", &err)
	b := &pgx.Batch{}
	// The NOT EXISTS keeps re-joins from drawing (and wasting) a seq; the
	// ON CONFLICT covers two pods enqueueing one buyer at once.
	b.Queue(`INSERT INTO queue (buyer_id, seq, slot)
		SELECT buyer, s, s FROM (
			SELECT buyer, nextval('queue_seq') AS s FROM (
				SELECT buyer FROM unnest($1::text[]) WITH ORDINALITY AS u(buyer, i)
				WHERE NOT EXISTS (SELECT 1 FROM queue q WHERE q.buyer_id = u.buyer)
				ORDER BY i) AS fresh) AS numbered
		ON CONFLICT (buyer_id) DO NOTHING`, buyers)
	b.Queue(`SELECT buyer_id, seq, joined_at FROM queue WHERE buyer_id = ANY($1::text[])`, buyers)
	res := s.pool.SendBatch(ctx, b)
	defer res.Close()
	if _, err := res.Exec(); err != nil {
		return nil, fmt.Errorf("enqueue %d buyers: %w", len(buyers), err)
	}
	rows, err := res.Query()
	if err != nil {
		return nil, fmt.Errorf("read places of %d buyers: %w", len(buyers), err)
	}
	got := make(map[string]Joined, len(buyers))
	for rows.Next() {
		var j Joined
		if err := rows.Scan(&j.BuyerID, &j.Seq, &j.JoinedAt); err != nil {
			return nil, fmt.Errorf("read places of %d buyers: %w", len(buyers), err)
		}
		got[j.BuyerID] = j
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read places of %d buyers: %w", len(buyers), err)
	}
	if len(got) != len(buyers) {
		return nil, fmt.Errorf("queue: %d of %d buyers found after the join", len(got), len(buyers))
	}
	if err := res.Close(); err != nil {
		return nil, fmt.Errorf("join queue: %w", err)
	}
	return got, nil
}

// QueueState is the one-row state of the queue.
type QueueState struct {
	ServingSlot int64
	Admitted    int64
	Waiting     int64
	ShuffleSeed []byte // nil until a Random queue's shuffle
	PrequeueSeq int64
}

// Admission is one step of the admitter: slots up to ServingSlot were
// admitted at At.
type Admission struct {
	ID          int64
	FromSlot    int64 // slots (FromSlot, ServingSlot] were admitted
	ServingSlot int64
	Admitted    int64
	At          time.Time
}

// QueueSnapshot is what a pod refreshes: the state and the admission steps
// after a known one (at most limit of them, oldest first).
func (s *Store) QueueSnapshot(ctx context.Context, afterID int64, since time.Time, limit int) (_ QueueState, _ []Admission, err error) {
	defer s.errs.Deferred("queue_snapshot", &err)
	b := &pgx.Batch{}
	b.Queue(`SELECT serving_slot, admitted, waiting, shuffle_seed, coalesce(prequeue_seq, 0) FROM queue_state`)
	b.Queue(`SELECT id, from_slot, serving_slot, admitted, at FROM queue_admissions
		WHERE id > $1 AND at > $2 ORDER BY id LIMIT $3`, afterID, since, limit)
	res := s.pool.SendBatch(ctx, b)
	defer res.Close()
	var st QueueState
	if err := res.QueryRow().Scan(&st.ServingSlot, &st.Admitted, &st.Waiting, &st.ShuffleSeed, &st.PrequeueSeq); err != nil {
		return QueueState{}, nil, fmt.Errorf("read queue state: %w", err)
	}
	rows, err := res.Query()
	if err != nil {
		return QueueState{}, nil, fmt.Errorf("read admissions after %d: %w", afterID, err)
	}
	steps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Admission, error) {
		var a Admission
		err := r.Scan(&a.ID, &a.FromSlot, &a.ServingSlot, &a.Admitted, &a.At)
		return a, err
	})
	if err != nil {
		return QueueState{}, nil, fmt.Errorf("read admissions after %d: %w", afterID, err)
	}
	if err := res.Close(); err != nil {
		return QueueState{}, nil, fmt.Errorf("read queue snapshot: %w", err)
	}
	return st, steps, nil
}

// ErrNotAdmitter means another session holds the admitter's lock.
var ErrNotAdmitter = errors.New("another pod is the admitter")

// Admitter is the one session allowed to move the queue: it holds the
// admitter advisory lock for as long as its connection lives.
type Admitter struct {
	conn *pgxpool.Conn
	errs *opcount.Errors
}

// TryAdmitter takes the admitter's lock on a dedicated connection, or
// answers ErrNotAdmitter.
func (s *Store) TryAdmitter(ctx context.Context) (_ *Admitter, err error) {
	defer s.errs.Deferred("try_admitter", &err)
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire admitter connection: %w", err)
	}
	var ok bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, queueAdmitterLockID).Scan(&ok); err != nil {
		c.Release()
		return nil, fmt.Errorf("try admitter lock: %w", err)
	}
	if !ok {
		c.Release()
		return nil, ErrNotAdmitter
	}
	return &Admitter{conn: c, errs: s.errs}, nil
}

// Close gives the role up: the connection (and with it the lock) is
// closed, never returned to the pool holding the lock.
func (a *Admitter) Close() {
	_ = a.conn.Conn().Close(context.Background())
	a.conn.Release()
}

// SeqAt maps a slot of a shuffled prequeue (1..prequeue) to the seq of the
// buyer the shuffle keyed by seed placed there (waitingroom.ShuffledSeq).
type SeqAt func(seed []byte, prequeue, slot int64) int64

// maxShuffledScan bounds the prequeue slots one step looks at: a stretch of
// seqs that no row holds (joins whose statement failed) is passed over in
// steps of this many, never read whole.
const maxShuffledScan = 1 << 16

// AdmitNext admits up to n more buyers in slot order and records the step
// (and each buyer it admitted, in queue_admitted). It returns the new state
// and how many it admitted.
//
// It reads the rows it admits and no others: beyond a shuffled prequeue the
// next n rows by slot (= seq, an index range); within it, the seqs seqAt
// places at the next slots, looked up by seq. Nothing is rewritten at the
// shuffle, so a prequeue of a million starts as fast as one of ten.
func (a *Admitter) AdmitNext(ctx context.Context, n int64, seqAt SeqAt) (st QueueState, admitted int64, err error) {
	defer a.errs.Deferred("admit_next", &err)
	err = pgx.BeginFunc(ctx, a.conn, func(tx pgx.Tx) error {
		// Waits for joins in flight and keeps new ones out until commit:
		// every row below the new serving slot is in it already.
		if _, err := tx.Exec(ctx, `LOCK TABLE queue IN SHARE MODE`); err != nil {
			return fmt.Errorf("lock queue: %w", err)
		}
		if err := tx.QueryRow(ctx, `SELECT serving_slot, admitted, shuffle_seed, coalesce(prequeue_seq, 0) FROM queue_state FOR UPDATE`).
			Scan(&st.ServingSlot, &st.Admitted, &st.ShuffleSeed, &st.PrequeueSeq); err != nil {
			return fmt.Errorf("read queue state: %w", err)
		}
		from := st.ServingSlot
		next := admitNext{serving: st.ServingSlot, want: n}
		if st.ShuffleSeed != nil && next.serving < st.PrequeueSeq {
			if err := next.shuffled(ctx, tx, st, seqAt); err != nil {
				return err
			}
		}
		if next.left() > 0 && (st.ShuffleSeed == nil || next.serving >= st.PrequeueSeq) {
			// Past the prequeue a row's slot is its seq (rows a shuffle
			// before 00006 rewrote have slots ≤ prequeue, behind us).
			if err := next.inOrder(ctx, tx); err != nil {
				return err
			}
		}
		if next.serving == from {
			return nil
		}
		admitted = int64(len(next.slots))
		st.ServingSlot, st.Admitted = next.serving, st.Admitted+admitted
		if _, err := tx.Exec(ctx, `UPDATE queue_state SET serving_slot = $1, admitted = $2`, st.ServingSlot, st.Admitted); err != nil {
			return fmt.Errorf("update queue state: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO queue_admissions (from_slot, serving_slot, admitted) VALUES ($1, $2, $3)`,
			from, st.ServingSlot, admitted); err != nil {
			return fmt.Errorf("record admission: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO queue_admitted (slot, buyer_id)
			SELECT * FROM unnest($1::bigint[], $2::text[]) ON CONFLICT (slot) DO NOTHING`, next.slots, next.buyers); err != nil {
			return fmt.Errorf("record %d admitted buyers: %w", admitted, err)
		}
		return nil
	})
	if err != nil {
		return st, admitted, fmt.Errorf("admit up to %d buyers: %w", n, err)
	}
	return st, admitted, nil
}

// admitNext gathers one step's buyers: the serving slot moves past each
// slot looked at, and past the last buyer taken.
type admitNext struct {
	serving int64
	want    int64
	slots   []int64
	buyers  []string
}

func (x *admitNext) left() int64 { return x.want - int64(len(x.slots)) }

// shuffled takes buyers from a shuffled prequeue: the seqs at the next
// slots, a window at a time (what is left to find and a quarter more, as a
// few seqs are gaps), looked up by seq.
func (x *admitNext) shuffled(ctx context.Context, tx pgx.Tx, st QueueState, seqAt SeqAt) error {
	for scanned := int64(0); x.left() > 0 && x.serving < st.PrequeueSeq && scanned < maxShuffledScan; {
		w := min(st.PrequeueSeq-x.serving, x.left()+x.left()/4+8, maxShuffledScan-scanned)
		seqs := make([]int64, w)
		for i := range seqs {
			seqs[i] = seqAt(st.ShuffleSeed, st.PrequeueSeq, x.serving+1+int64(i))
		}
		rows, err := tx.Query(ctx, `SELECT seq, buyer_id FROM queue WHERE seq = ANY($1::bigint[])`, seqs)
		if err != nil {
			return fmt.Errorf("read the prequeue's slots after %d: %w", x.serving, err)
		}
		buyer := map[int64]string{}
		var seq int64
		var b string
		if _, err := pgx.ForEachRow(rows, []any{&seq, &b}, func() error { buyer[seq] = b; return nil }); err != nil {
			return fmt.Errorf("read the prequeue's slots after %d: %w", x.serving, err)
		}
		base := x.serving
		x.serving += w
		scanned += w
		for i, q := range seqs {
			b, ok := buyer[q]
			if !ok {
				continue // a seq drawn by a join that failed
			}
			x.slots, x.buyers = append(x.slots, base+1+int64(i)), append(x.buyers, b)
			if x.left() == 0 {
				x.serving = base + 1 + int64(i)
				break
			}
		}
	}
	return nil
}

// inOrder takes the next buyers in join order.
func (x *admitNext) inOrder(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT slot, buyer_id FROM queue WHERE slot > $1 ORDER BY slot LIMIT $2`, x.serving, x.left())
	if err != nil {
		return fmt.Errorf("find slots after %d: %w", x.serving, err)
	}
	var slot int64
	var b string
	if _, err := pgx.ForEachRow(rows, []any{&slot, &b}, func() error {
		x.slots, x.buyers, x.serving = append(x.slots, slot), append(x.buyers, b), slot
		return nil
	}); err != nil {
		return fmt.Errorf("find slots after %d: %w", x.serving, err)
	}
	return nil
}

// CountWaiting records the buyers behind the serving slot, as the places
// left: the last seq minus the serving slot (the slots 1..last seq are
// the places of seqs 1..last seq, shuffled or not). A seq no row holds
// (a join whose statement failed) is counted too, as position counts it.
// One index probe, whatever the queue's length: never a count(*).
func (a *Admitter) CountWaiting(ctx context.Context) (_ int64, err error) {
	defer a.errs.Deferred("count_waiting", &err)
	var n int64
	err = a.conn.QueryRow(ctx, `UPDATE queue_state SET waiting = greatest(0,
			(SELECT coalesce(max(seq), 0) FROM queue) - queue_state.serving_slot)
		RETURNING waiting`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count waiting buyers: %w", err)
	}
	return n, nil
}

// CountActive counts the active buyers: admitted less than passTTL ago
// (their pass is still valid), without a ticket yet (no count in buyers,
// which every order increments) and without a live hold (a held seat is
// already out of the available ones). One range scan of queue_admitted,
// the slots admitted within passTTL.
//
// It also returns queue_state.released as of the same snapshot: the leaves
// the count already reflects (see LeaveQueue).
func (a *Admitter) CountActive(ctx context.Context, passTTL time.Duration) (_, released int64, err error) {
	defer a.errs.Deferred("count_active", &err)
	var n int64
	err = a.conn.QueryRow(ctx, `SELECT count(*), (SELECT released FROM queue_state) FROM queue_admitted q
		WHERE q.slot > `+activeSince+`
		AND NOT EXISTS (SELECT 1 FROM buyers b WHERE b.buyer_id = q.buyer_id AND b.tickets > 0)
		AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.buyer_id = q.buyer_id AND h.state = 'held'
			AND h.expires_at > clock_timestamp())`,
		passTTL.Milliseconds()).Scan(&n, &released)
	if err != nil {
		return 0, 0, fmt.Errorf("count active buyers: %w", err)
	}
	return n, released, nil
}

// Shuffle fixes a Random queue's prequeue once: every buyer enqueued so far
// (seqs 1..prequeue) is placed at slot π(seq), a permutation of 1..prequeue
// keyed by seed; later joiners keep slot = seq, behind them. It writes the
// seed and prequeue into queue_state and no queue row: places are computed
// from the seed (waitingroom.Slot, and ShuffledSeq for admission). It does
// nothing when the shuffle already happened (another admitter did it), or
// when admission already began in FIFO order (the order changed mid-sale),
// and returns the state.
func (a *Admitter) Shuffle(ctx context.Context, seed []byte) (_ QueueState, err error) {
	defer a.errs.Deferred("shuffle", &err)
	var st QueueState
	err = pgx.BeginFunc(ctx, a.conn, func(tx pgx.Tx) error {
		// Waits for joins in flight: every seq up to the prequeue's last
		// is committed (or its statement failed) before it is read.
		if _, err := tx.Exec(ctx, `LOCK TABLE queue IN SHARE MODE`); err != nil {
			return fmt.Errorf("lock queue: %w", err)
		}
		if err := tx.QueryRow(ctx, `SELECT serving_slot, admitted, shuffle_seed, coalesce(prequeue_seq, 0) FROM queue_state FOR UPDATE`).
			Scan(&st.ServingSlot, &st.Admitted, &st.ShuffleSeed, &st.PrequeueSeq); err != nil {
			return fmt.Errorf("read queue state: %w", err)
		}
		if st.ShuffleSeed != nil || st.ServingSlot > 0 {
			return nil // shuffled already, or admitting in FIFO order since before
		}
		var prequeue int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM queue`).Scan(&prequeue); err != nil {
			return fmt.Errorf("read prequeue: %w", err)
		}
		st.ShuffleSeed, st.PrequeueSeq = seed, prequeue
		if _, err := tx.Exec(ctx, `UPDATE queue_state SET shuffle_seed = $1, prequeue_seq = $2`, seed, prequeue); err != nil {
			return fmt.Errorf("update queue state: %w", err)
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("shuffle queue: %w", err)
	}
	return st, nil
}

// Left is a buyer who left the queue (queue_left).
type Left struct {
	ID     int64
	Buyer  string
	Seq    int64
	LeftAt time.Time
}

// activeSince is the condition of CountActive: slot admitted within passTTL
// ($1, ms).
const activeSince = `coalesce((SELECT from_slot FROM queue_admissions
		WHERE at > clock_timestamp() - $1 * interval '1 millisecond' ORDER BY at LIMIT 1),
	(SELECT serving_slot FROM queue_state))`

// LeaveQueue takes the buyer who joined with seq out of the queue: their
// row, and their admission if they were admitted (a buyer has one queue
// row, so at most one admission). When that admission made them an active
// buyer (admitted within passTTL, no ticket, no live hold),
// queue_state.released grows by one, which the admitter reads at its next
// step. It returns whether the buyer was still in the queue with that seq
// (false: they left already, or re-joined since with another seq). Taking
// the queue's ROW EXCLUSIVE lock, it waits for an admission step in flight,
// so an admission that commits first is found and released.
func (s *Store) LeaveQueue(ctx context.Context, buyer string, seq int64, passTTL time.Duration) (left bool, err error) {
	defer s.errs.Deferred("leave_queue", &err)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM queue WHERE buyer_id = $1 AND seq = $2`, buyer, seq)
		if err != nil {
			return fmt.Errorf("leave the queue: %w", err)
		}
		if left = tag.RowsAffected() == 1; !left {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO queue_left (buyer_id, seq) VALUES ($1, $2)`, buyer, seq); err != nil {
			return fmt.Errorf("record the leave: %w", err)
		}
		_, err = tx.Exec(ctx, `WITH gone AS (DELETE FROM queue_admitted WHERE buyer_id = $2 RETURNING slot, buyer_id)
			UPDATE queue_state SET released = released + 1
			WHERE EXISTS (SELECT 1 FROM gone g WHERE g.slot > `+activeSince+`
				AND NOT EXISTS (SELECT 1 FROM buyers b WHERE b.buyer_id = g.buyer_id AND b.tickets > 0)
				AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.buyer_id = g.buyer_id AND h.state = 'held'
					AND h.expires_at > clock_timestamp()))`, passTTL.Milliseconds(), buyer)
		if err != nil {
			return fmt.Errorf("release the admission: %w", err)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("leave the queue: %w", err)
	}
	return left, nil
}

// QueueLeft reads who left after the row afterID (at most limit, oldest
// first).
func (s *Store) QueueLeft(ctx context.Context, afterID int64, limit int) (_ []Left, err error) {
	defer s.errs.Deferred("queue_left", &err)
	rows, err := s.pool.Query(ctx, `SELECT id, buyer_id, seq, left_at FROM queue_left WHERE id > $1 ORDER BY id LIMIT $2`, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("read leaves after %d: %w", afterID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Left, error) {
		var l Left
		err := r.Scan(&l.ID, &l.Buyer, &l.Seq, &l.LeftAt)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("read leaves after %d: %w", afterID, err)
	}
	return out, nil
}

// Released is how many active buyers have left the queue, ever
// (queue_state.released).
func (a *Admitter) Released(ctx context.Context) (_ int64, err error) {
	defer a.errs.Deferred("queue_released", &err)
	var n int64
	if err := a.conn.QueryRow(ctx, `SELECT released FROM queue_state`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read released buyers: %w", err)
	}
	return n, nil
}
