package seatlock

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkWinner is a winner's Redis work (the lock, then the sold
// marker) from 64 concurrent buyers per core, as in a sell-out: through
// the coalescer, and each call on its own round trip as before issue 18's
// tuning (the old code, kept here for the comparison). cpu-µs/op is the
// process's CPU (user + system) per winner, the number that matters on a
// CPU-bound pod; ns/op moves with the machine's load.
func BenchmarkWinner(b *testing.B) {
	for _, mode := range []string{"coalesced", "direct"} {
		b.Run(mode, func(b *testing.B) {
			l := newLocks(b, fmt.Sprint("bench-", mode, "-", benchRuns.Add(1)), time.Minute)
			var next atomic.Int64
			b.SetParallelism(32)
			b.ReportAllocs()
			start := cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					id := next.Add(1)
					tok := fmt.Sprint("tok-", id)
					if mode == "coalesced" {
						if r, err := l.Acquire(ctx, id, tok); err != nil || r.State != Acquired {
							b.Fatal(r, err)
						}
						if err := l.MarkSold(ctx, id, tok); err != nil {
							b.Fatal(err)
						}
						continue
					}
					if _, err := l.rdb.SetArgs(ctx, l.key(id), tok, redis.SetArgs{Mode: "NX", TTL: time.Minute, Get: true}).Result(); err != redis.Nil {
						b.Fatal(err)
					}
					if _, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
						p.Set(ctx, l.key(id), soldPrefix+tok, 0)
						p.SRem(ctx, l.free, id)
						return nil
					}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/1e3, "cpu-µs/op")
		})
	}
}

// benchRuns keeps each run of a benchmark on fresh seats.
var benchRuns atomic.Int64

// cpuTime is the process's CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
