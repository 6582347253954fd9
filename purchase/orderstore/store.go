// Package orderstore is a sale's Postgres database: schema, seat inventory and
// orders. Its constraints are what make a double sale impossible; everything
// in Redis is an accelerator in front of it.
package orderstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/flux-order/flux-order/internal/opcount"
)

//go:embed migrations/*.sql
var migrations embed.FS

// MaxTickets is the largest inventory a sale may have (the CRD enforces the same).
const MaxTickets = 10_000_000

// seedLockID is the advisory lock that serialises seeding between pods
// starting at once ("fo-seed").
const seedLockID = 0x666f2d73656564

var (
	// ErrTicketSold means the seat already belongs to an order.
	ErrTicketSold = errors.New("ticket already sold")
	// ErrBuyerLimit means the buyer already holds the maximum number of tickets.
	ErrBuyerLimit = errors.New("buyer limit reached")
	// ErrKeyReused means an Idempotency-Key was used before for another ticket.
	ErrKeyReused = errors.New("idempotency key already used for another ticket")
	// ErrNotFound means no such order or ticket.
	ErrNotFound = errors.New("not found")
	// ErrShrink means the requested inventory is smaller than the seeded one.
	ErrShrink = errors.New("tickets cannot shrink")
)

// SoldError is ErrTicketSold with the order that owns the seat, when known.
type SoldError struct{ OrderID uuid.UUID }

func (e *SoldError) Error() string { return ErrTicketSold.Error() }

// Is makes errors.Is(err, ErrTicketSold) true.
func (e *SoldError) Is(target error) bool { return target == ErrTicketSold }

// Order is a confirmed purchase. HoldID and PaymentRef are set only on an
// order confirmed from a hold.
type Order struct {
	ID          uuid.UUID `json:"orderId"`
	TicketID    int64     `json:"ticketId"`
	BuyerID     string    `json:"buyerId"`
	PurchasedAt time.Time `json:"purchasedAt"`
	HoldID      uuid.UUID `json:"holdId,omitzero"`
	PaymentRef  string    `json:"paymentRef,omitempty"`
}

// Purchase is what Confirm writes.
type Purchase struct {
	TicketID       int64
	OrderID        uuid.UUID
	BuyerID        string
	IdempotencyKey string // empty: none
	MaxPerBuyer    int    // 0: unlimited
	// AnySeat: the buyer asked for any seat, so the key's earlier order
	// for another seat is a replay, not a reused key.
	AnySeat bool
}

// ClientCheckInterval is how often the server checks, while it runs a
// statement or waits on a lock, that our side of the session is still
// there (client_connection_check_interval). When a statement's context
// ends, pgx sends the server a CancelRequest before it closes the
// connection (pgconn's asyncClose), which ends the statement at once, a
// commit waiting for a synchronous standby included (it then commits
// locally). This check is the fallback for a session the cancel did not
// reach: it stops within this interval of the connection closing, except
// a commit waiting for a standby (interrupts are held then; only a cancel
// or a terminate ends that wait). pgx's CancelRequestContextWatcherHandler
// is not used: it sends the same cancel at the same moment, and would only
// keep the connection (one reconnect saved per timed-out statement) at the
// price of holding it, and a batch's leader, 100 ms longer.
const ClientCheckInterval = time.Second

// Store is a connection pool to one sale's database.
type Store struct {
	pool   *pgxpool.Pool
	schema string // "": the database's default (public)

	// The group commits (batch.go): purchases, holds, hold confirmations.
	purchases *batcher[Purchase, memberResult]
	holds     *batcher[HoldRequest, memberResult]
	confirms  *batcher[holdConfirm, memberResult]
	metrics   *batchMetrics
	errs      *opcount.Errors
}

// Option changes how a Store is opened.
type Option func(*options)

type options struct{ batching Batching }

// WithBatching sets the group commit of confirmations (DefaultBatching
// otherwise); it must be valid (Batching.Validate).
func WithBatching(b Batching) Option { return func(o *options) { o.batching = b } }

// Open connects to url. Pool size and timeouts may be set in the URL
// (pool_max_conns, connect_timeout); the defaults suit a purchase pod.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	return OpenInSchema(ctx, url, "", opts...)
}

// OpenInSchema is Open with the sale's tables in their own PostgreSQL
// schema (created by Migrate), so that several sales can share one
// database: every connection uses it as its search_path. An empty schema is
// the database's default.
func OpenInSchema(ctx context.Context, url, schema string, opts ...Option) (*Store, error) {
	o := options{batching: DefaultBatching()}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.batching.Validate(); err != nil {
		return nil, err
	}
	s := &Store{schema: schema, metrics: newBatchMetrics(), errs: newErrors()}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// Not err: pgx quotes the URL (its password redacted at best),
		// and the URL is whatever Secret key spec.postgres.external names.
		return nil, errors.New("the database URL does not parse (its text is not repeated: it may hold a password)")
	}
	if schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// A dead database must turn into a 503 quickly, not a hung request.
		cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	}
	if !hasParam(url, "pool_max_conns") {
		cfg.MaxConns = 16
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["client_connection_check_interval"]; !ok {
		cfg.ConnConfig.RuntimeParams["client_connection_check_interval"] = strconv.Itoa(int(ClientCheckInterval.Milliseconds()))
	}
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	s.purchases = newBatcher(o.batching, s.metrics.series("purchase"), purchaseConflicts, s.confirmPurchases)
	s.purchases.setting = purchaseSetting
	// A keyed batch commits only until CommitSkewMargin before its earliest
	// member's deadline (withOrderLocks): a member with less time than
	// that and minStatementTime would roll the whole batch back.
	s.purchases.minTime = minStatementTime + CommitSkewMargin
	checkout := o.batching.checkout()
	s.holds = newBatcher(checkout, s.metrics.series("hold"), holdConflicts, s.holdSeats)
	s.holds.setting = holdSettingOf
	s.confirms = newBatcher(checkout, s.metrics.series("confirm_hold"), confirmConflicts, s.confirmHolds)
	return s, nil
}

// Close answers the confirmations still queued, waits for the batches in
// flight and releases every connection.
func (s *Store) Close() {
	s.purchases.close()
	s.holds.close()
	s.confirms.close()
	s.pool.Close()
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) (err error) {
	defer s.errs.Deferred("ping", &err)
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Migrate brings the schema up to date. goose's session lock (a Postgres
// advisory lock) lets several pods start at once.
// With a schema, it first creates the schema, where the migrations then
// create every table (goose's version table included).
func (s *Store) Migrate(ctx context.Context) (err error) {
	defer s.errs.Deferred("migrate", &err)
	if s.schema != "" {
		if _, err := s.pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{s.schema}.Sanitize()); err != nil {
			return fmt.Errorf("create schema %s: %w", s.schema, err)
		}
	}
	if err := s.migrateRiver(ctx); err != nil {
		return err
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("create migration locker: %w", err)
	}
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, mustSub(migrations, "migrations"),
		goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// riverMigrateLock is the advisory lock key under which one pod at a time
// runs River's migrations.
const riverMigrateLock = 0x666c75785f726976 // "flux_riv"

// migrateRiver brings River's tables (the webhook outbox and queue,
// docs/delivery.md) to the version of the linked River, with River's own
// migrator, under a session advisory lock held on a connection of its own:
// pods starting at once take turns, and goose's migrations after it
// (the webhook outbox's trigger) find river_job. Not in one transaction: River's
// migration 006 uses an enum value added by 004, which PostgreSQL allows
// only after that value committed.
func (s *Store) migrateRiver(ctx context.Context) error {
	m, err := rivermigrate.New(riverpgxv5.New(s.pool), &rivermigrate.Config{Schema: s.schema})
	if err != nil {
		return fmt.Errorf("river migrator: %w", err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(riverMigrateLock)); err != nil {
		return err
	}
	defer func() {
		// A lock left behind by a failed unlock goes with the connection.
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(riverMigrateLock)); err != nil {
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}()
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("migrate river: %w", err)
	}
	return nil
}

// Pool is the store's connection pool, for the webhook deliverer's River
// client (package delivery), which shares the sale's database.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Schema is the sale's PostgreSQL schema ("" for the default).
func (s *Store) Schema() string { return s.schema }

// Seed makes seats 1..tickets exist. It is idempotent, grows the inventory
// when tickets grows, refuses to shrink it, and serialises concurrent callers
// with an advisory lock.
func (s *Store) Seed(ctx context.Context, tickets int64) (err error) {
	defer s.errs.Deferred("seed", &err)
	if tickets < 1 || tickets > MaxTickets {
		return fmt.Errorf("tickets must be in 1..%d, got %d", MaxTickets, tickets)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, seedLockID); err != nil {
			return fmt.Errorf("take seed lock: %w", err)
		}
		var seeded int64
		if err := tx.QueryRow(ctx, `SELECT tickets FROM inventory`).Scan(&seeded); err != nil {
			return fmt.Errorf("read inventory: %w", err)
		}
		if tickets < seeded {
			return fmt.Errorf("%w: %d seats are seeded, asked for %d", ErrShrink, seeded, tickets)
		}
		if tickets == seeded {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tickets (id) SELECT generate_series($1::bigint, $2::bigint)
			ON CONFLICT (id) DO NOTHING`, seeded+1, tickets); err != nil {
			return fmt.Errorf("insert seats %d..%d: %w", seeded+1, tickets, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE inventory SET tickets = $1`, tickets); err != nil {
			return fmt.Errorf("update inventory: %w", err)
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrShrink) { // a refusal is returned as is
		return fmt.Errorf("seed %d tickets: %w", tickets, err)
	}
	return err
}

// Confirm sells p.TicketID to p.BuyerID. It waits for the pod's next
// group commit (batch.go): one statement and one durable commit for every
// confirmation sent with it, each with its own outcome. replayed is true
// when the idempotency key already had an order, which is then returned
// instead of a new one. Refusals: *SoldError, *HeldError, *LimitError,
// ErrKeyReused. Any other error leaves the outcome unknown: the order may
// have committed.
func (s *Store) Confirm(ctx context.Context, p Purchase) (o Order, replayed bool, err error) {
	defer s.errs.Deferred("confirm", &err)
	m, err := s.purchases.do(ctx, p)
	if err != nil {
		return Order{}, false, fmt.Errorf("confirm ticket %d: %w", p.TicketID, err)
	}
	if err := m.refusal(); err != nil {
		return Order{}, false, err
	}
	if m.outcome == "replayed" && m.order.TicketID != p.TicketID && !p.AnySeat {
		return Order{}, false, fmt.Errorf("%w: %d", ErrKeyReused, m.order.TicketID)
	}
	return m.order, m.outcome == "replayed", nil
}

const orderColumns = `id, ticket_id, buyer_id, purchased_at, hold_id, coalesce(payment_ref, '')`

// orderOrCancelled reads one order from orders, or else from
// order_cancellations, in one statement (one snapshot: a cancellation
// committing meanwhile is seen in exactly one of the two).
const orderOrCancelled = `SELECT ` + orderColumns + `, false FROM orders o WHERE %[1]s
	UNION ALL SELECT order_id, ticket_id, buyer_id, purchased_at, hold_id, coalesce(payment_ref, ''), true
	FROM order_cancellations o WHERE %[2]s LIMIT 1`

// scanOrderOrCancelled reads a row of orderOrCancelled: a
// *CancelledError when the order was cancelled.
func scanOrderOrCancelled(row pgx.Row) (Order, error) {
	var o Order
	var hold uuid.NullUUID
	var cancelled bool
	err := row.Scan(&o.ID, &o.TicketID, &o.BuyerID, &o.PurchasedAt, &hold, &o.PaymentRef, &cancelled)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Order{}, ErrNotFound
	case err != nil:
		return Order{}, err
	case cancelled:
		return Order{}, &CancelledError{OrderID: o.ID, BuyerID: o.BuyerID}
	}
	o.HoldID = hold.UUID
	return o, nil
}

// Order returns the order with the given id: ErrNotFound if none, a
// *CancelledError if it was cancelled.
func (s *Store) Order(ctx context.Context, id uuid.UUID) (_ Order, err error) {
	defer s.errs.Deferred("order", &err)
	o, err := scanOrderOrCancelled(s.pool.QueryRow(ctx, fmt.Sprintf(orderOrCancelled, "o.id = $1", "o.order_id = $1"), id))
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrOrderCancelled) {
		return Order{}, fmt.Errorf("read order %s: %w", id, err)
	}
	return o, err
}

// KeyedPurchaseInFlight says whether a keyed purchase of order id (a
// derived id) may be committing now: its transaction holds the order's
// advisory lock (withOrderLocks). A shared try-lock, released at once, so
// lookups never wait for each other or for the purchase. False means any
// purchase of that id has ended (committed or not): read the order again.
func (s *Store) KeyedPurchaseInFlight(ctx context.Context, id uuid.UUID) (_ bool, err error) {
	defer s.errs.Deferred("order", &err)
	var free bool
	if err := s.pool.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock_shared($1)`, orderLockKey(id)).Scan(&free); err != nil {
		return false, fmt.Errorf("ask whether order %s is being confirmed: %w", id, err)
	}
	return !free, nil
}

// OrderByKey returns the buyer's order made with an idempotency key:
// ErrNotFound if none, a *CancelledError if it was cancelled.
func (s *Store) OrderByKey(ctx context.Context, buyerID, key string) (_ Order, err error) {
	defer s.errs.Deferred("order_by_key", &err)
	o, err := scanOrderOrCancelled(s.pool.QueryRow(ctx,
		fmt.Sprintf(orderOrCancelled, "o.buyer_id = $1 AND o.idempotency_key = $2", "o.buyer_id = $1 AND o.idempotency_key = $2"), buyerID, key))
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrOrderCancelled) {
		return Order{}, fmt.Errorf("read order by idempotency key: %w", err)
	}
	return o, err
}

// TicketSold reports whether a seat is sold. Its errors are TicketState's,
// which name the seat already.
func (s *Store) TicketSold(ctx context.Context, id int64) (bool, error) {
	sold, _, err := s.TicketState(ctx, id)
	return sold, err
}

// TicketState reports whether a seat is sold, or held by a live hold.
func (s *Store) TicketState(ctx context.Context, id int64) (sold, held bool, err error) {
	defer s.errs.Deferred("ticket_state", &err)
	err = s.pool.QueryRow(ctx, `SELECT sold, coalesce(held_until > clock_timestamp(), false) FROM tickets WHERE id = $1`, id).
		Scan(&sold, &held)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, ErrNotFound
	}
	if err != nil {
		return false, false, fmt.Errorf("read ticket %d: %w", id, err)
	}
	return sold, held && !sold, nil
}

// Counts is a sale's inventory, exactly.
type Counts struct {
	Tickets int64 // seeded seats
	Sold    int64
	Held    int64 // under a live hold
}

// Counts reads the seeded inventory, the seats sold from the sharded
// counter (64 rows, never by counting orders), and the seats under a live
// hold from the partial index on held_until (only seats with a hold are in
// it, and the scan starts at now: its cost is the live holds). now(), not
// clock_timestamp(): an index condition must be stable, and this statement
// is its own transaction.
func (s *Store) Counts(ctx context.Context) (_ Counts, err error) {
	defer s.errs.Deferred("counts", &err)
	var c Counts
	err = s.pool.QueryRow(ctx, `SELECT (SELECT tickets FROM inventory),
		(SELECT coalesce(sum(sold), 0)::bigint FROM sold_counter),
		(SELECT count(*) FROM tickets WHERE held_until > now() AND NOT sold)`).Scan(&c.Tickets, &c.Sold, &c.Held)
	if err != nil {
		return Counts{}, fmt.Errorf("read inventory counts: %w", err)
	}
	return c, nil
}

// UnsoldFrom returns up to limit seat ids that are neither sold nor under a
// live hold, starting at seat from and wrapping around to seat 1, in id
// order. It walks the primary key, so its cost grows with the seats it
// skips, not with the inventory.
func (s *Store) UnsoldFrom(ctx context.Context, from int64, limit int) (_ []int64, err error) {
	defer s.errs.Deferred("unsold_from", &err)
	const free = `NOT sold AND (held_until IS NULL OR held_until <= clock_timestamp())`
	rows, err := s.pool.Query(ctx, `(SELECT id FROM tickets WHERE id >= $1 AND `+free+` ORDER BY id LIMIT $2)
		UNION ALL (SELECT id FROM tickets WHERE id < $1 AND `+free+` ORDER BY id LIMIT $2) LIMIT $2`, from, limit)
	if err != nil {
		return nil, fmt.Errorf("list unsold seats from %d: %w", from, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("list unsold seats from %d: %w", from, err)
	}
	return ids, nil
}
