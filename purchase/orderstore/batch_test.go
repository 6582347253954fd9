package orderstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
)

// A caller whose context ends while its statement commits gets the
// answer when it is there: select picks at random among ready cases, and
// a committed order answered as ctx.Err() is a 503 whose seat lock is
// released although the order exists.
func TestBatcher_AContextEndingAsTheAnswerArrives_GetsTheAnswer(t *testing.T) {
	var cancel context.CancelFunc
	b := newBatcher[int, memberResult](Batching{Max: 64, Flushers: 1}, newBatchMetrics().series("test"),
		func(int) [2]string { return [2]string{} },
		func(_ context.Context, reqs []int) ([]memberResult, error) {
			cancel() // the caller's context ends as its statement commits
			res := make([]memberResult, len(reqs))
			for i := range res {
				res[i].outcome = "ok"
			}
			return res, nil
		})
	defer b.close()
	// A lone caller runs its statement itself, so both the answer and
	// ctx.Done() are ready when it selects; 200 tries make a coin flip
	// certain to show.
	for i := range 200 {
		ctx, c := context.WithCancel(context.Background())
		cancel = c
		m, err := b.do(ctx, i)
		if err != nil || m.outcome != "ok" {
			t.Fatalf("try %d: a committed member answered %q, %v; want its result", i, m.outcome, err)
		}
	}
}

// A leader whose own member waits behind a member it shares a seat with
// is not kept by that member's statement: the statement goes to a
// goroutine with the slot, another flusher answers the leader's member,
// and the leader returns while the statement it took is still in flight.
// Nothing is stranded: the queue drains and every slot comes back.
func TestBatcher_ALeaderAnsweredByAnotherFlusher_ReturnsAtOnce(t *testing.T) {
	gate := make(chan struct{})
	started := make(chan []int, 8)
	seat := func(r int) [2]string { return [2]string{strconv.Itoa(r % 10)} }
	// Max 2: a second flusher starts only for a full batch waiting.
	b := newBatcher[int, memberResult](Batching{Max: 2, Flushers: 2}, newBatchMetrics().series("test"), seat,
		func(_ context.Context, reqs []int) ([]memberResult, error) {
			started <- reqs
			if reqs[0] == 1 {
				<-gate // the first member's statement is slow
			}
			res := make([]memberResult, len(reqs))
			for i, r := range reqs {
				res[i] = memberResult{outcome: "ok", detail: strconv.Itoa(r)}
			}
			return res, nil
		})
	defer func() { openGate(gate); b.close() }()
	ctx := context.Background()

	// Member 1 (seat 1) waits a moment before the leader's member 11 (seat
	// 1 too): the leader's batch is [1], and 11 waits for the next one.
	first := &call[int, memberResult]{req: 1, queued: time.Now(), done: make(chan outcome[memberResult], 1)}
	b.pending = append(b.pending, first)
	leader := make(chan outcome[memberResult], 1)
	go func() {
		m, err := b.do(ctx, 11)
		leader <- outcome[memberResult]{m, err}
	}()
	if got := <-started; len(got) != 1 || got[0] != 1 {
		t.Fatalf("the leader's batch is %v, want [1]", got)
	}
	// Another caller makes a full batch wait, finds the second slot free
	// and sends 11 with its own.
	if m, err := b.do(ctx, 2); err != nil || m.detail != "2" {
		t.Fatalf("the second flusher's member: %+v, %v", m, err)
	}
	select {
	case o := <-leader:
		if o.err != nil || o.res.detail != "11" {
			t.Fatalf("the leader got %+v, want member 11's result", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the leader was kept by member 1's statement after another flusher answered its own member")
	}
	if len(first.done) != 0 {
		t.Fatal("member 1 was answered before its statement returned")
	}
	openGate(gate)
	if o := <-first.done; o.err != nil || o.res.detail != "1" {
		t.Fatalf("member 1 got %+v", o)
	}
	for !func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.busy == 0 && len(b.pending) == 0 }() {
		time.Sleep(time.Millisecond)
	}
}

// While a batch is in flight, the members that arrive wait for it and
// leave together when it ends, fewer than Max of them in one statement,
// however many flushers are free; once a full batch (Max) waits, a second
// statement goes in flight beside the first.
func TestBatcher_ASecondStatementOnlyForAFullBatch(t *testing.T) {
	gate := make(chan struct{})
	started := make(chan int, 16) // each statement's size
	b := newBatcher[int, memberResult](Batching{Max: 8, Flushers: 4}, newBatchMetrics().series("test"),
		func(r int) [2]string { return [2]string{strconv.Itoa(r)} },
		func(_ context.Context, reqs []int) ([]memberResult, error) {
			started <- len(reqs)
			if reqs[0] == 0 {
				<-gate // the first statement is slow
			}
			return make([]memberResult, len(reqs)), nil
		})
	defer func() { openGate(gate); b.close() }()
	ctx := context.Background()
	answers := make(chan error, 32)
	ask := func(r int) {
		go func() {
			_, err := b.do(ctx, r)
			answers <- err
		}()
	}
	ask(0)
	if n := <-started; n != 1 {
		t.Fatalf("the lone first member's statement has %d members", n)
	}
	for r := 1; r <= 7; r++ { // 7 < Max wait, no statement starts
		ask(r)
	}
	b.mu.Lock()
	b.newest = time.Now().Add(time.Hour) // the slow statement is not stuck (stallAfter)
	b.mu.Unlock()
	waiting := func(n int) func() error {
		return func() error {
			b.mu.Lock()
			defer b.mu.Unlock()
			if len(b.pending) != n {
				return fmt.Errorf("%d waiting, want %d", len(b.pending), n)
			}
			return nil
		}
	}
	testservers.Eventually(t, 5*time.Second, time.Millisecond, "7 members waiting", waiting(7))
	select {
	case n := <-started:
		t.Fatalf("a statement of %d started beside the slow one with fewer than Max waiting", n)
	case <-time.After(50 * time.Millisecond):
	}
	ask(8) // the 8th makes a full batch: a second statement starts
	if n := <-started; n != 8 {
		t.Fatalf("the second statement has %d members, want a full batch of 8", n)
	}
	for range 8 {
		if err := <-answers; err != nil {
			t.Fatal(err)
		}
	}
	b.mu.Lock()
	b.newest = time.Now().Add(time.Hour)
	b.mu.Unlock()
	for r := 9; r <= 11; r++ {
		ask(r)
	}
	testservers.Eventually(t, 5*time.Second, time.Millisecond, "3 members waiting", waiting(3))
	openGate(gate)
	if n := <-started; n != 3 {
		t.Fatalf("after the slow statement, the 3 waiting leave together: a statement of %d", n)
	}
	for range 4 {
		if err := <-answers; err != nil {
			t.Fatal(err)
		}
	}
}

// A statement stuck in flight (a row lock, a dead connection) does not keep
// every buyer of the pod waiting while flusher slots are free: once it has
// run for stallAfter, the next member to arrive sends what waits beside it.
func TestBatcher_AStuckStatement_TheNextMemberSendsBesideIt(t *testing.T) {
	gate := make(chan struct{})
	started := make(chan int, 16)
	b := newBatcher[int, memberResult](Batching{Max: 64, Flushers: 2}, newBatchMetrics().series("test"),
		func(r int) [2]string { return [2]string{strconv.Itoa(r)} },
		func(_ context.Context, reqs []int) ([]memberResult, error) {
			started <- len(reqs)
			if reqs[0] == 0 {
				<-gate
			}
			return make([]memberResult, len(reqs)), nil
		})
	defer func() { openGate(gate); b.close() }()
	answers := make(chan error, 8)
	ask := func(r int) {
		go func() {
			_, err := b.do(context.Background(), r)
			answers <- err
		}()
	}
	setNewest := func(at time.Time) {
		b.mu.Lock()
		b.newest = at
		b.mu.Unlock()
	}
	ask(0)
	<-started
	setNewest(time.Now().Add(time.Hour)) // not stuck yet, however slow the machine
	ask(1)
	ask(2)
	testservers.Eventually(t, 5*time.Second, time.Millisecond, "2 members waiting", func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.pending) != 2 {
			return fmt.Errorf("%d waiting", len(b.pending))
		}
		return nil
	})
	setNewest(time.Now().Add(-stallAfter - time.Millisecond)) // now it has run for stallAfter
	ask(3)
	select {
	case n := <-started:
		if n != 3 {
			t.Fatalf("the statement beside the stuck one has %d members, want the 3 waiting", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the members waited behind a stuck statement with a flusher slot free")
	}
	for range 3 {
		if err := <-answers; err != nil {
			t.Fatal(err)
		}
	}
}

// A statement whose outcome the server may still decide until a moment
// (answerAfter: a keyed batch whose connection broke) answers its members
// at that moment, not before, and its flusher goes on meanwhile: the next
// member is answered before it.
func TestBatcher_AnswerAfter_MembersAnsweredThenAndTheFlusherGoesOn(t *testing.T) {
	at := time.Now().Add(300 * time.Millisecond)
	failed := make(chan struct{})
	b := newBatcher[int, memberResult](Batching{Max: 64, Flushers: 1}, newBatchMetrics().series("test"),
		func(r int) [2]string { return [2]string{strconv.Itoa(r)} },
		func(_ context.Context, reqs []int) ([]memberResult, error) {
			if reqs[0] == 0 {
				defer close(failed)
				return nil, &answerAfter{at: at, err: errors.New("connection lost")}
			}
			return make([]memberResult, len(reqs)), nil
		})
	defer b.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := b.do(ctx, 0)
		first <- err
	}()
	<-failed
	if _, err := b.do(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if time.Now().After(at) {
		t.Fatal("the next member waited for the first one's answer time: the flusher was held")
	}
	err := <-first
	if time.Now().Before(at) {
		t.Fatalf("answered before its time: %v", err)
	}
	var later *answerAfter
	if !errors.As(err, &later) || ctx.Err() != nil {
		t.Fatalf("want the statement's error at its time, got %v (ctx %v)", err, ctx.Err())
	}
}

// openGate lets the statements blocked on gate go on (once).
func openGate(gate chan struct{}) {
	select {
	case <-gate:
	default:
		close(gate)
	}
}
