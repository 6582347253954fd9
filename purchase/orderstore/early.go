package orderstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// queryEarly runs sql with args as its own implicit transaction, as
// pool.Query does, but has PostgreSQL send the statement's rows as soon as
// it has run (a Flush message between its Execute and the Sync that
// commits it): they arrive before the commit's WAL flush instead of after
// it. executed (if not nil) is called then, once the rows are read, so
// that the pod's next batch executes while this one's commit is flushed.
//
// The rows still stand for a commit, not a statement: their Next returns
// false, and Err (and Close) return, only once the commit is durable, and
// Err reports its failure. A caller that reads them as it reads
// pool.Query's answers (Next to the end, then Err) therefore answers no
// member before the commit is on disk.
func (s *Store) queryEarly(ctx context.Context, executed func(), sql string, args ...any) pgx.Rows {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return &earlyRows{err: err, done: true}
	}
	r := &earlyRows{conn: conn, executed: executed}
	c := conn.Conn()
	// Prepared once per connection under its own text, as pgx's statement
	// cache would: each batch pays Bind and Execute, not Parse.
	sd, err := c.Prepare(ctx, sql, sql)
	if err != nil {
		r.err = err
		r.finish()
		return r
	}
	var q pgx.ExtendedQueryBuilder
	if err := q.Build(c.TypeMap(), sd, args); err != nil {
		r.err = fmt.Errorf("encode the arguments: %w", err)
		r.finish()
		return r
	}
	p := c.PgConn().StartPipeline(ctx)
	r.pipeline = p
	p.SendQueryStatement(sd, q.ParamValues, q.ParamFormats, q.ResultFormats)
	p.SendFlushRequest()
	if err := p.Sync(); err != nil {
		r.err = err
		r.finish()
		return r
	}
	res, err := p.GetResults()
	if err != nil { // the statement failed: its transaction did not commit
		r.err = err
		r.finish()
		return r
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		r.err = fmt.Errorf("the statement answered %T, not rows", res)
		r.finish()
		return r
	}
	r.rows = pgx.RowsFromResultReader(c.TypeMap(), rr)
	return r
}

// earlyRows are queryEarly's answer: the statement's rows, whose end
// waits for the commit (finish).
type earlyRows struct {
	conn     *pgxpool.Conn
	pipeline *pgconn.Pipeline
	rows     pgx.Rows
	executed func()
	err      error
	done     bool
}

// finish reads the statement's rows to their end, tells executed, waits
// for the Sync's answer (the commit) and gives the connection back. The
// first error is the rows'.
func (r *earlyRows) finish() {
	if r.done {
		return
	}
	r.done = true
	if r.rows != nil {
		r.rows.Close()
		if err := r.rows.Err(); err != nil && r.err == nil {
			r.err = err
		}
	}
	if r.err == nil && r.executed != nil {
		r.executed()
	}
	if r.pipeline != nil {
		if r.err == nil {
			if _, err := r.pipeline.GetResults(); err != nil {
				r.err = err // the commit's: the connection broke, or it failed
			}
		}
		if err := r.pipeline.Close(); err != nil && r.err == nil {
			r.err = err
		}
	}
	if r.conn != nil {
		// The pool destroys a connection left closed, busy or in a
		// transaction instead of handing it out again.
		r.conn.Release()
	}
}

func (r *earlyRows) Next() bool {
	if r.rows != nil && !r.done && r.rows.Next() {
		return true
	}
	r.finish()
	return false
}

func (r *earlyRows) Close() { r.finish() }

func (r *earlyRows) Err() error {
	if r.done {
		return r.err
	}
	if r.rows != nil {
		// Read mid-way: the rows' own error, the commit's once they end.
		return r.rows.Err()
	}
	return nil
}

func (r *earlyRows) Scan(dest ...any) error {
	if r.rows == nil || r.done {
		return fmt.Errorf("no row to scan")
	}
	return r.rows.Scan(dest...)
}

func (r *earlyRows) Values() ([]any, error) {
	if r.rows == nil || r.done {
		return nil, fmt.Errorf("no row")
	}
	return r.rows.Values()
}

func (r *earlyRows) RawValues() [][]byte {
	if r.rows == nil || r.done {
		return nil
	}
	return r.rows.RawValues()
}

func (r *earlyRows) CommandTag() pgconn.CommandTag {
	if r.rows == nil {
		return pgconn.CommandTag{}
	}
	return r.rows.CommandTag()
}

func (r *earlyRows) FieldDescriptions() []pgconn.FieldDescription {
	if r.rows == nil {
		return nil
	}
	return r.rows.FieldDescriptions()
}

func (r *earlyRows) Conn() *pgx.Conn { return nil }

func (r *earlyRows) TypeMap() *pgtype.Map {
	if r.rows == nil {
		return nil
	}
	return r.rows.TypeMap()
}
