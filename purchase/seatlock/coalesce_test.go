package seatlock

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flux-order/flux-order/internal/testservers"
)

// countPipelines counts the pipelines the client sends.
type countPipelines struct{ n atomic.Int64 }

func (c *countPipelines) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *countPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}

func (c *countPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// Concurrent callers share pipelines, and each still gets its own answer:
// one winner among 200 buyers of one seat, every marker written.
func TestCoalescer_SharesPipelinesKeepsEachAnswer(t *testing.T) {
	ctx := context.Background()
	l := newLocks(t, "co", time.Minute)
	var count countPipelines
	l.rdb.AddHook(&count)
	const n = 200
	var won, held atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := l.Acquire(ctx, 1, fmt.Sprint("tok-", i))
			switch {
			case err != nil:
				t.Error(err)
			case r.State == Acquired:
				won.Add(1)
			case r.State == Held:
				held.Add(1)
			}
			if err := l.MarkSold(ctx, int64(100+i), fmt.Sprint("order-", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 || held.Load() != n-1 {
		t.Fatalf("want 1 winner and %d held, got %d and %d", n-1, won.Load(), held.Load())
	}
	for i := range n {
		if r, ok, err := l.Peek(ctx, int64(100+i)); err != nil || !ok || r.State != Sold || r.Owner != fmt.Sprint("order-", i) {
			t.Fatalf("seat %d: want sold by order-%d, got %+v %v %v", 100+i, i, r, ok, err)
		}
	}
	if p := count.n.Load(); p >= 2*n {
		t.Fatalf("%d calls took %d pipelines: nothing was shared", 2*n, p)
	} else {
		t.Logf("%d calls in %d pipelines", 2*n, p)
	}
	if l.co.busy || len(l.co.pending) != 0 {
		t.Fatal("the coalescer must be idle once every caller returned")
	}
}

// A dead Redis fails every waiting caller (nobody hangs), and the
// coalescer serves again once Redis is back.
func TestCoalescer_DeadRedisFailsEveryCaller(t *testing.T) {
	port, err := testservers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprint("127.0.0.1:", port), MaxRetries: -1,
		DialTimeout: 100 * time.Millisecond, DialerRetries: 1, ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	l := New(rdb, "dead", time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	var failed atomic.Int64
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if _, err := l.Acquire(ctx, int64(i), "tok"); err != nil {
				failed.Add(1)
			}
			if err := l.MarkSold(ctx, int64(i), "o"); err == nil {
				t.Error("MarkSold on a dead Redis must fail")
			}
		})
	}
	wg.Wait()
	if failed.Load() != 50 {
		t.Fatalf("want 50 failed acquires, got %d", failed.Load())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the callers took %s: they must fail within the client's timeouts", d)
	}
	if l.co.busy || len(l.co.pending) != 0 {
		t.Fatal("the coalescer must be idle once every caller returned")
	}
}

// A caller whose context is done sends nothing; one whose deadline is
// about to end does not cut the pipeline short for the others in it.
func TestCoalescer_CallerDeadlines(t *testing.T) {
	l := newLocks(t, "co-ctx", time.Minute)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Acquire(done, 1, "tok"); err == nil {
		t.Fatal("a done context must fail the call")
	}
	if _, ok, err := l.Peek(context.Background(), 1); err != nil || ok {
		t.Fatalf("a caller whose context was done must send nothing: %v %v", ok, err)
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 100 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if i%10 == 0 {
				// Done at once, or while queued behind a pipeline.
				ctx, cancel = context.WithTimeout(context.Background(), time.Duration(i/10)*200*time.Microsecond)
			}
			defer cancel()
			if r, err := l.Acquire(ctx, int64(100+i), "tok"); i%10 != 0 && (err != nil || r.State != Acquired) {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d callers with a minute left failed beside callers at their deadline", failed.Load())
	}
}

// blockFirstPipeline holds the first pipeline until release is closed.
type blockFirstPipeline struct {
	countPipelines
	first   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (b *blockFirstPipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if b.first.CompareAndSwap(false, true) {
			close(b.entered)
			<-b.release
		}
		return next(ctx, cmds)
	}
}

// A caller whose deadline passes while it waits behind a slow pipeline is
// answered with its context's error when its turn comes and sends nothing
// (a stalled Redis must not hold every queued purchase for the whole
// queue, nor write a marker long after its caller gave up: a stale sold
// marker after a cancellation's re-apply window would keep a free seat
// refused).
func TestCoalescer_QueuedCallerPastItsDeadlineSendsNothing(t *testing.T) {
	l := newLocks(t, "co-queued", time.Minute)
	hook := &blockFirstPipeline{entered: make(chan struct{}), release: make(chan struct{})}
	l.rdb.(*redis.Client).AddHook(hook)
	first := make(chan error, 1)
	go func() { _, err := l.Acquire(context.Background(), 1, "tok"); first <- err }()
	<-hook.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	queued := make(chan error, 1)
	go func() { queued <- l.MarkSold(ctx, 2, "late") }()
	<-ctx.Done() // the queued caller is past its deadline before its turn comes
	close(hook.release)
	if err := <-first; err != nil {
		t.Fatalf("the first caller: %v", err)
	}
	if err := <-queued; err == nil {
		t.Fatal("a caller past its deadline in the queue must fail")
	}
	if _, ok, err := l.Peek(context.Background(), 2); err != nil || ok {
		t.Fatalf("its marker must not be written: %v %v", ok, err)
	}
}
