// Package seatlock holds a sale's per-seat locks and its pool of free seats in
// Redis. It only makes losing fast: losing its data costs speed, never
// correctness, because Postgres fences every sale.
//
// Keys, for sale s:
//
//	fs:s:ticket:<id>  lock token (PX lockTTL) while a buyer confirms; "hold:<holdId>" (PX
//	                  until the hold expires) while a buyer holds it; "sold:<orderId>" forever after
//	fs:s:free         a random sample of unsold seats, for any-seat purchases
//
// and the Pub/Sub channel fs:s:cancelled, on which the pod that cancels an
// order tells the others (Announce, Listen).
//
// The scripts build ticket keys from the id, so the per-sale Redis must be a
// single instance (not Redis Cluster), which is what the operator deploys.
package seatlock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flux-order/flux-order/internal/opcount"
)

// State is what a lock attempt found.
type State int

const (
	// Acquired means the caller now holds the seat's lock.
	Acquired State = iota
	// Held means another buyer holds the lock.
	Held
	// Sold means the seat is sold; Result.Owner names the order when known.
	Sold
	// OnHold means a checkout hold keeps the seat; Result.Owner is the hold id.
	OnHold
)

const (
	soldPrefix = "sold:"
	holdPrefix = "hold:"
)

// HoldToken is the lock token of hold holdID: it marks the seat as held for
// a checkout (not for a purchase's few milliseconds).
func HoldToken(holdID string) string { return holdPrefix + holdID }

// Result is the outcome of Acquire.
type Result struct {
	State State
	Owner string // the owning order id when State == Sold (may be empty), the hold id when OnHold
}

// Locks is one sale's lock space in one Redis.
type Locks struct {
	rdb    redis.UniversalClient
	prefix string       // the sale's key (and channel) prefix, fs:<sale>:
	ticket string       // key prefix of seat locks
	free   string       // key of the free-seat pool
	spent  string       // key prefix of spent one-time ids (SpendOnce)
	ttl    atomic.Int64 // lock expiry in nanoseconds (SetTTL)
	errs   *opcount.Errors
	co     *coalescer // Acquire's and MarkSold's pipelines
}

// Operations are the values of flux_order_redis_errors_total's operation
// label: Locks' methods (Acquire and AcquireFor are acquire).
var Operations = []string{"acquire", "acquire_any", "peek", "mark_sold", "release", "put_hold", "refill", "spend_once",
	"unsell", "publish"}

// New returns the locks of sale in rdb, with lock expiry ttl.
func New(rdb redis.UniversalClient, sale string, ttl time.Duration) *Locks {
	l := &Locks{rdb: rdb, prefix: "fs:" + sale + ":", ticket: "fs:" + sale + ":ticket:", free: "fs:" + sale + ":free", spent: "fs:" + sale + ":spent:", co: &coalescer{rdb: rdb}}
	l.errs = opcount.New("flux_order_redis_errors_total",
		"Failed Redis operations by operation (a lost answer, a timeout, an error reply; not a seat found taken).",
		Operations, func(err error) bool { return errors.Is(err, ErrPoolEmpty) || errors.Is(err, ErrAllHeld) })
	l.SetTTL(ttl)
	return l
}

// Instrument registers the lock space's series with reg (the pod's
// registry): flux_order_redis_errors_total by operation.
func (l *Locks) Instrument(reg prometheus.Registerer) { reg.MustRegister(l.errs.Collector()) }

// SetTTL changes the expiry of the locks taken from now on; locks already
// held keep theirs.
func (l *Locks) SetTTL(ttl time.Duration) { l.ttl.Store(int64(ttl)) }

// TTL is the expiry of the locks taken now.
func (l *Locks) TTL() time.Duration { return time.Duration(l.ttl.Load()) }

func (l *Locks) key(id int64) string { return l.ticket + strconv.FormatInt(id, 10) }

// retryOnce runs cmd, and once more after a network error or a timeout: the
// command may or may not have run, and running it again must leave Redis as
// one run would. Only the commands whose doc says so use it; the client
// itself retries nothing. Not retried: an answer from Redis (an error reply
// is the outcome), and anything once ctx is done. The caller wraps the
// error.
func retryOnce[T any](ctx context.Context, cmd func() (T, error)) (T, error) {
	v, err := cmd()
	var reply redis.Error
	if err == nil || errors.As(err, &reply) || ctx.Err() != nil {
		return v, err
	}
	return cmd()
}

// Acquire tries to lock seat id with token in one round trip (SET NX PX GET).
// Finding token itself counts as acquired, so it is retried once after a
// lost answer (retryOnce), and a retry that reuses an idempotency token is
// safe.
func (l *Locks) Acquire(ctx context.Context, id int64, token string) (Result, error) {
	return l.AcquireFor(ctx, id, token, l.TTL())
}

// AcquireFor is Acquire with a lock that expires after ttl (a hold's).
func (l *Locks) AcquireFor(ctx context.Context, id int64, token string, ttl time.Duration) (_ Result, err error) {
	defer l.errs.Deferred("acquire", &err)
	prev, err := retryOnce(ctx, func() (string, error) {
		cmd := redis.NewStringCmd(ctx, "set", l.key(id), token, "px", max(ttl.Milliseconds(), 1), "nx", "get")
		l.co.do(ctx, cmd)
		return cmd.Result()
	})
	switch {
	case errors.Is(err, redis.Nil), err == nil && prev == token:
		return Result{State: Acquired}, nil
	case err != nil:
		return Result{}, fmt.Errorf("acquire seat %d: %w", id, err)
	}
	return classify(prev), nil
}

func classify(v string) Result {
	if owner, ok := strings.CutPrefix(v, soldPrefix); ok {
		return Result{State: Sold, Owner: owner}
	}
	if hold, ok := strings.CutPrefix(v, holdPrefix); ok {
		return Result{State: OnHold, Owner: hold}
	}
	return Result{State: Held}
}

// Peek reports the seat's state without taking it: ok is false when Redis
// knows nothing about the seat (free, or its data was lost). A read,
// retried once.
func (l *Locks) Peek(ctx context.Context, id int64) (r Result, ok bool, err error) {
	defer l.errs.Deferred("peek", &err)
	v, err := retryOnce(ctx, func() (string, error) { return l.rdb.Get(ctx, l.key(id)).Result() })
	if errors.Is(err, redis.Nil) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, fmt.Errorf("peek seat %d: %w", id, err)
	}
	return classify(v), true, nil
}

// MarkSold records a confirmed sale. Unconditional on purpose: a sold seat
// stays sold, so overwriting a lock another buyer took after ours expired is
// right (that buyer will be refused by Postgres anyway). Setting a value and
// removing a set member twice is doing it once: retried once.
func (l *Locks) MarkSold(ctx context.Context, id int64, orderID string) (err error) {
	defer l.errs.Deferred("mark_sold", &err)
	_, err = retryOnce(ctx, func() (struct{}, error) {
		set := redis.NewStatusCmd(ctx, "set", l.key(id), soldPrefix+orderID)
		srem := redis.NewIntCmd(ctx, "srem", l.free, id)
		l.co.do(ctx, set, srem)
		if err := set.Err(); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, srem.Err()
	})
	if err != nil {
		return fmt.Errorf("mark seat %d sold: %w", id, err)
	}
	return nil
}

// releaseScript deletes the lock only if it still holds our token (never a
// plain DEL: the lock may have expired and been taken by another buyer), and
// puts the seat back into the free pool.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SADD', KEYS[2], ARGV[2])
  return 1
end
return 0`)

// Release gives up a lock taken with token; released is false when the lock
// was no longer ours. A second run finds the token gone and does nothing:
// retried once.
func (l *Locks) Release(ctx context.Context, id int64, token string) (released bool, err error) {
	defer l.errs.Deferred("release", &err)
	n, err := retryOnce(ctx, func() (int, error) {
		return releaseScript.Run(ctx, l.rdb, []string{l.key(id), l.free}, token, id).Int()
	})
	if err != nil {
		return false, fmt.Errorf("release seat %d: %w", id, err)
	}
	return n == 1, nil
}

// putHoldScript replaces our lock token (or nothing: Redis may have lost
// it) with another hold's marker expiring when that hold does; never a seat
// that has become sold or another buyer's lock meanwhile.
var putHoldScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
  return 1
end
return 0`)

// PutHold puts back the marker of hold holdID, expiring at until, where our
// lock token was: after Redis lost its data, Postgres knows holds Redis
// forgot, and losers must again fail fast. Running it twice is running it
// once: retried once.
func (l *Locks) PutHold(ctx context.Context, id int64, token, holdID string, until time.Time) error {
	if !until.After(time.Now()) {
		// The hold ended meanwhile. Release's error names the seat.
		if _, err := l.Release(ctx, id, token); err != nil {
			return fmt.Errorf("put back hold %s: %w", holdID, err)
		}
		return nil
	}
	_, err := retryOnce(ctx, func() (int, error) {
		return putHoldScript.Run(ctx, l.rdb, []string{l.key(id)}, token, HoldToken(holdID), until.UnixMilli()).Int()
	})
	l.errs.Observe("put_hold", err) // the Release above counts as release
	if err != nil {
		return fmt.Errorf("put back hold %s on seat %d: %w", holdID, id, err)
	}
	return nil
}

// expireHoldScript makes our own marker expire at a given time; a marker
// that is gone (released, or lost with Redis's data) or another's is left
// as it is.
var expireHoldScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
  return 1
end
return 0`)

// ExpireHold makes the marker token that this attempt wrote on seat id (a
// keyed hold's retry: its SET NX PX lasts the whole hold TTL from the
// retry) expire when hold holdID does, or releases it if that is past. It
// never writes a marker that is gone: the hold was released meanwhile, and
// putting it back would refuse a free seat until the hold's old expiry
// (PutHold, which does write one, is for a hold Postgres still holds and
// Redis forgot). Running it twice is running it once: retried once.
func (l *Locks) ExpireHold(ctx context.Context, id int64, token, holdID string, until time.Time) error {
	if !until.After(time.Now()) {
		if _, err := l.Release(ctx, id, token); err != nil {
			return fmt.Errorf("end hold %s's marker: %w", holdID, err)
		}
		return nil
	}
	_, err := retryOnce(ctx, func() (int, error) {
		return expireHoldScript.Run(ctx, l.rdb, []string{l.key(id)}, token, until.UnixMilli()).Int()
	})
	l.errs.Observe("put_hold", err)
	if err != nil {
		return fmt.Errorf("end hold %s's marker on seat %d: %w", holdID, id, err)
	}
	return nil
}

// takeAnyScript pops random seats from the pool until one can be locked.
// Popped seats that are held or sold leave the pool: a held seat comes back
// through Release if its buyer fails.
var takeAnyScript = redis.NewScript(`
for i = 1, tonumber(ARGV[4]) do
  local id = redis.call('SPOP', KEYS[1])
  if not id then return -1 end
  if redis.call('SET', ARGV[1] .. id, ARGV[2], 'NX', 'PX', ARGV[3]) then return tonumber(id) end
end
return 0`)

// ErrPoolEmpty means the free-seat pool is empty: the caller must ask
// Postgres whether seats remain and Refill.
var ErrPoolEmpty = errors.New("free-seat pool is empty")

// ErrAllHeld means every seat popped from the pool was held or sold.
var ErrAllHeld = errors.New("no free seat found in the pool")

// AcquireAny locks a random free seat from the pool with token for ttl, in
// one round trip, looking at no more than tries seats. Never retried: a script whose
// answer was lost may have popped and locked a seat, and a second run would
// lock another, leaving the first out of the pool until its lock expires and
// a refill finds it.
func (l *Locks) AcquireAny(ctx context.Context, token string, ttl time.Duration, tries int) (_ int64, err error) {
	defer l.errs.Deferred("acquire_any", &err)
	id, err := takeAnyScript.Run(ctx, l.rdb, []string{l.free}, l.ticket, token, ttl.Milliseconds(), tries).Int64()
	switch {
	case err != nil:
		return 0, fmt.Errorf("take a seat from the free pool: %w", err)
	case id == -1:
		return 0, ErrPoolEmpty
	case id == 0:
		return 0, ErrAllHeld
	}
	return id, nil
}

// Refill adds unsold seats to the free pool.
func (l *Locks) Refill(ctx context.Context, ids []int64) (err error) {
	defer l.errs.Deferred("refill", &err)
	if len(ids) == 0 {
		return nil
	}
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	// SADD of the same members twice is SADD once: retried once.
	if _, err := retryOnce(ctx, func() (int64, error) { return l.rdb.SAdd(ctx, l.free, members...).Result() }); err != nil {
		return fmt.Errorf("refill free pool with %d seats: %w", len(ids), err)
	}
	return nil
}

// SpendOnce marks id spent for ttl (SET NX PX in the sale's key space,
// fs:<sale>:spent:<id>) and says whether this call spent it: true the
// first time, false while the mark lives. The waiting room spends each
// proof-of-work challenge once. Not retried: a lost answer would make a
// retry see its own mark and refuse the join (the client solves again).
func (l *Locks) SpendOnce(ctx context.Context, id string, ttl time.Duration) (_ bool, err error) {
	defer l.errs.Deferred("spend_once", &err)
	ok, err := l.rdb.SetNX(ctx, l.spent+id, "1", ttl).Result()
	if err != nil {
		return false, fmt.Errorf("spend %s: %w", id, err)
	}
	return ok, nil
}

// Cancellations (issue 19): a cancelled order's seat is on sale again, so
// its sold marker must go, and every pod must forget it knew the seat sold.

// SoldSeat is a seat whose order was cancelled: its marker is removed only
// while it still names that order.
type SoldSeat struct {
	ID      int64
	OrderID string
}

// unsellScript removes each seat's sold marker if it names the cancelled
// order (a seat resold since keeps its new one) or no order at all ("sold:",
// written by older pods when the fence's refusal raced a cancellation: it
// would otherwise refuse the free seat forever, and dropping a marker costs
// at most one fenced attempt), or if the seat has no marker, and puts the
// seat back in the free pool. KEYS[1] is the pool, KEYS[i+1] seat i's key;
// ARGV[i] its marker, ARGV[n+i] its id.
var unsellScript = redis.NewScript(`
local n = #KEYS - 1
local freed = 0
for i = 1, n do
  local v = redis.call('GET', KEYS[i + 1])
  if v == false or v == ARGV[i] or v == 'sold:' then
    if v then redis.call('DEL', KEYS[i + 1]) end
    redis.call('SADD', KEYS[1], ARGV[n + i])
    freed = freed + 1
  end
end
return freed`)

// Unsell removes the sold markers of cancelled orders' seats, in one round
// trip, and returns how many seats it put back in the pool. Re-running it
// leaves Redis as one run does: retried once. A seat another buyer's lock
// holds meanwhile is left to that buyer (Postgres decides).
func (l *Locks) Unsell(ctx context.Context, seats []SoldSeat) (_ int, err error) {
	defer l.errs.Deferred("unsell", &err)
	if len(seats) == 0 {
		return 0, nil
	}
	keys := make([]string, 1, len(seats)+1)
	keys[0] = l.free
	args := make([]any, 2*len(seats))
	for i, s := range seats {
		keys = append(keys, l.key(s.ID))
		args[i] = soldPrefix + s.OrderID
		args[len(seats)+i] = s.ID
	}
	n, err := retryOnce(ctx, func() (int, error) { return unsellScript.Run(ctx, l.rdb, keys, args...).Int() })
	if err != nil {
		return 0, fmt.Errorf("unsell %d seats: %w", len(seats), err)
	}
	return n, nil
}

// cancelChannel is the sale's Pub/Sub channel of cancellations.
func (l *Locks) cancelChannel() string { return l.prefix + "cancelled" }

// Announce publishes msg on the sale's cancellation channel, for every
// pod subscribed (Listen). Not retried: a lost message is found by the
// pods' poll of PostgreSQL.
func (l *Locks) Announce(ctx context.Context, msg string) (err error) {
	defer l.errs.Deferred("publish", &err)
	if err := l.rdb.Publish(ctx, l.cancelChannel(), msg).Err(); err != nil {
		return fmt.Errorf("publish a cancellation: %w", err)
	}
	return nil
}

// Listen calls fn with every message published on the sale's cancellation
// channel until ctx ends; the client re-subscribes after a lost
// connection (messages sent meanwhile are lost: the caller polls too).
func (l *Locks) Listen(ctx context.Context, fn func(msg string)) {
	ps := l.rdb.Subscribe(ctx, l.cancelChannel())
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			fn(m.Payload)
		}
	}
}
