package seatlock

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// coalescer sends the commands of the purchase path (Acquire's SET NX PX GET,
// MarkSold's SET and SREM) that concurrent callers issue at the same moment
// as one pipeline: one write and one read for all of them, instead of a
// round trip, two system calls and a wake-up each (issue 18's profile: the
// Redis client was the pod's largest CPU share, most of it those system
// calls). A group commit answers its members together, so their sold
// markers arrive together too.
//
// As the orderstore batcher, it has no goroutine of its own: a caller that
// finds no pipeline in flight sends one at once, for everything waiting
// then (a lone buyer waits for nobody); callers arriving meanwhile queue,
// and when the pipeline returns the first of them is told to send the
// next one. Each caller issues one command group at a time and waits for
// its replies, so its own commands keep their order; commands of different
// callers were never ordered.
type coalescer struct {
	rdb redis.UniversalClient

	mu      sync.Mutex
	pending []*coalesced
	busy    bool // a pipeline is in flight, or a caller was told to send one
}

// coalesced is one caller's commands.
type coalesced struct {
	ctx  context.Context // the caller's: done by its turn, it is not sent
	cmds []redis.Cmder
	// done receives true once cmds ran (each holds its reply or error), or
	// false when this caller must send the next pipeline.
	done chan bool
}

// maxPipeline bounds the commands of one pipeline; the rest go in the next.
const maxPipeline = 256

// pipelineTimeout bounds a pipeline on top of the client's own timeouts
// (read and write 0.5 s each, pool wait 1 s in the pod). It is not the
// callers' deadlines: one caller near its end would cut the pipeline short
// for every other caller in it.
const pipelineTimeout = 2 * time.Second

// do runs cmds in the next pipeline and returns once they ran: each cmd
// holds its own reply or error (a connection error is set on every command
// of the pipeline). A caller whose ctx is done sends nothing, also when its
// ctx ends while it waits in the queue: it is answered with ctx's error
// when its turn comes, so a stalled Redis costs a queued caller at most one
// pipeline past its deadline, not the whole queue.
func (c *coalescer) do(ctx context.Context, cmds ...redis.Cmder) {
	if err := ctx.Err(); err != nil {
		for _, cmd := range cmds {
			cmd.SetErr(err)
		}
		return
	}
	q := &coalesced{ctx: ctx, cmds: cmds, done: make(chan bool, 1)}
	c.mu.Lock()
	c.pending = append(c.pending, q)
	lead := !c.busy
	c.busy = true
	c.mu.Unlock()
	if lead || !<-q.done {
		// q is first in line: its commands are in this pipeline.
		c.send()
		<-q.done
	}
}

// send runs one pipeline of the waiting commands (the first caller's
// always among them), answers their callers, and hands the next pipeline to
// the first caller still waiting, or marks the coalescer idle.
func (c *coalescer) send() {
	c.mu.Lock()
	k, n := 0, 0
	for _, q := range c.pending {
		if k > 0 && n+len(q.cmds) > maxPipeline {
			break
		}
		k, n = k+1, n+len(q.cmds)
	}
	batch := c.pending[:k:k]
	c.pending = c.pending[k:]
	c.mu.Unlock()

	live := make([]*coalesced, 0, len(batch))
	for _, q := range batch {
		if err := q.ctx.Err(); err != nil {
			for _, cmd := range q.cmds {
				cmd.SetErr(err)
			}
			continue
		}
		live = append(live, q)
	}
	if len(live) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), pipelineTimeout)
		_, _ = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, q := range live {
				for _, cmd := range q.cmds {
					_ = p.Process(ctx, cmd)
				}
			}
			return nil
		})
		cancel()
	}

	c.mu.Lock()
	var next *coalesced
	if len(c.pending) > 0 {
		next = c.pending[0]
	} else {
		c.busy = false
	}
	c.mu.Unlock()
	for _, q := range batch {
		q.done <- true
	}
	if next != nil {
		next.done <- false
	}
}
