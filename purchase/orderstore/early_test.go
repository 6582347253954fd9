package orderstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// commitGate makes the commit of every transaction that writes to
// early_probe wait for advisory lock 4242 (a deferred constraint trigger
// runs at commit, after the statement's rows were sent) and, for a row
// with fail set, fail.
func commitGate(t *testing.T, s *Store) {
	t.Helper()
	if _, err := s.pool.Exec(context.Background(), `
		CREATE TABLE early_probe (x int, fail boolean NOT NULL DEFAULT false);
		CREATE FUNCTION early_probe_gate() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_advisory_lock(4242);
			PERFORM pg_advisory_unlock(4242);
			IF NEW.fail THEN
				RAISE EXCEPTION 'the commit failed' USING ERRCODE = 'FO099';
			END IF;
			RETURN NULL;
		END $$;
		CREATE CONSTRAINT TRIGGER early_probe_gate AFTER INSERT ON early_probe
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION early_probe_gate()`); err != nil {
		t.Fatal(err)
	}
}

// queryEarly's rows arrive, and executed is told, while the commit is still
// under way; the rows end, and count, only once it is done.
func TestQueryEarly_RowsBeforeTheCommit_TheirEndAfterIt(t *testing.T) {
	s := newStore(t)
	commitGate(t, s)
	ctx := context.Background()
	holder, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release()
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock(4242)`); err != nil {
		t.Fatal(err)
	}
	executed := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		rows := s.queryEarly(ctx, func() { close(executed) }, `INSERT INTO early_probe (x) VALUES ($1) RETURNING x`, 7)
		var x int
		if !rows.Next() {
			ended <- errors.Join(errors.New("no row"), rows.Err())
			return
		}
		if err := rows.Scan(&x); err != nil || x != 7 {
			ended <- errors.Join(errors.New("scan"), err)
			return
		}
		if rows.Next() {
			ended <- errors.New("a second row")
			return
		}
		ended <- rows.Err()
	}()
	select {
	case <-executed:
	case err := <-ended:
		t.Fatalf("the rows ended before the commit could (%v)", err)
	case <-time.After(5 * time.Second):
		t.Fatal("executed was not told while the commit waited")
	}
	select {
	case err := <-ended:
		t.Fatalf("the rows ended (%v) while the commit waited", err)
	case <-time.After(100 * time.Millisecond):
	}
	var seen int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM early_probe`).Scan(&seen); err != nil || seen != 0 {
		t.Fatalf("another connection sees %d rows (%v) before the commit", seen, err)
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock(4242)`); err != nil {
		t.Fatal(err)
	}
	if err := <-ended; err != nil {
		t.Fatalf("the rows ended with %v, want the commit", err)
	}
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM early_probe`).Scan(&seen); err != nil || seen != 1 {
		t.Fatalf("%d rows committed (%v), want 1", seen, err)
	}
}

// A commit that fails after the rows were read is the rows' error: no
// member of such a statement is answered as written.
func TestQueryEarly_AFailedCommitIsTheRowsError(t *testing.T) {
	s := newStore(t)
	commitGate(t, s)
	ctx := context.Background()
	told := false
	rows := s.queryEarly(ctx, func() { told = true }, `INSERT INTO early_probe (x, fail) VALUES ($1, true) RETURNING x`, 1)
	n := 0
	for rows.Next() {
		n++
	}
	var pgErr *pgconn.PgError
	if err := rows.Err(); !errors.As(err, &pgErr) || pgErr.Code != "FO099" {
		t.Fatalf("rows.Err() = %v after %d rows, want the commit's failure FO099", err, n)
	}
	if n != 1 || !told {
		t.Fatalf("%d rows read, executed told %v: want the row, then the commit's failure", n, told)
	}
	var seen int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM early_probe`).Scan(&seen); err != nil || seen != 0 {
		t.Fatalf("%d rows (%v) after a failed commit", seen, err)
	}
	// The connection is whole again: the next statement runs.
	rows = s.queryEarly(ctx, nil, `SELECT 1`)
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("the next statement: %v", err)
	}
}

// A statement that fails is the rows' error, and executed is not told (it
// did not run; no commit follows).
func TestQueryEarly_AFailedStatementIsTheRowsError(t *testing.T) {
	s := newStore(t)
	told := false
	rows := s.queryEarly(context.Background(), func() { told = true }, `SELECT 1/($1::int - 1)`, 1)
	for rows.Next() {
	}
	var pgErr *pgconn.PgError
	if err := rows.Err(); !errors.As(err, &pgErr) || pgErr.Code != "22012" {
		t.Fatalf("rows.Err() = %v, want division by zero", err)
	}
	if told {
		t.Fatal("executed was told of a statement that failed")
	}
}
