// Package gctune sizes the purchase pod's garbage collection: a soft
// memory limit from the container's cgroup, and a heap floor below which
// the collector does not run proportionally.
//
// Why: a purchase pod's live heap is a few MB (the dependencies' package
// state, the metrics, the connections' buffers), and at GOGC=100 it
// collects every few MB allocated: on the hot seat, a cycle every ≈ 22 ms
// and ≈ 1.6 µs of CPU per request (docs/benchmarks.md). A floor of a few
// tens of MB spaces the cycles out several times, for memory the pod's
// default request (64Mi) already covers. Above the floor the collector is
// Go's usual proportional one, and the soft memory limit keeps the heap
// under a container limit when one is set. This is the heap floor that
// Go's GOMEMLIMIT alone cannot give (it is a ceiling, not a floor), the
// same idea as the "GC tuner" large Go services run.
package gctune

import (
	"context"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// DefaultFloor is the heap size below which the collector waits: half the
// purchase pod's default memory request.
const DefaultFloor = 32 << 20

// minHeap is Go's minimum heap goal at GOGC=100; it scales with GOGC, so
// GOGC is capped where that minimum reaches the floor (at startup, when
// the live heap is still tiny).
const minHeap = 4 << 20

// limitRatio of a container's memory limit is the soft memory limit: the
// rest is the process's memory outside the Go heap.
const limitRatio = 0.9

// Percent is the GOGC that lets the heap grow to floor before the next
// cycle, and never less than Go's default 100. Since Go 1.18 the heap goal
// is live + (live + roots) × GOGC/100, roots being the goroutine stacks and
// globals the collector scans.
func Percent(live, roots, floor uint64) int {
	if floor <= 2*live+roots || floor <= minHeap {
		return 100
	}
	limit := floor * 100 / minHeap
	if live+roots == 0 {
		return int(limit)
	}
	return int(max(100, min(limit, (floor-live)*100/(live+roots))))
}

// Start sets the soft memory limit from the cgroup (unless GOMEMLIMIT or
// AUTOMEMLIMIT=off says otherwise) and, unless GOGC is set (an explicit
// choice wins) or floor is 0, re-tunes GOGC to the live heap after every
// GC cycle until ctx ends. The floor is at most a quarter of the memory
// limit, when there is one.
func Start(ctx context.Context, floor uint64, log *slog.Logger) {
	limit, err := memlimit.Set(memlimit.WithRatio(limitRatio), memlimit.WithLogger(log))
	if err != nil {
		log.Warn("soft memory limit from the cgroup", "err", err)
	}
	if limit > 0 && limit < math.MaxInt64 {
		floor = min(floor, uint64(limit)/4)
	}
	if floor == 0 || os.Getenv("GOGC") != "" {
		return
	}
	log.Info("GC heap floor", "floor", floor, "memoryLimit", limit)
	t := &tuner{ctx: ctx, floor: floor, sample: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"},
	}}
	t.tune()
	t.arm()
}

type tuner struct {
	ctx     context.Context
	floor   uint64
	sample  []metrics.Sample
	percent int
}

// sentinel is garbage from birth: its cleanup runs after the next GC
// cycle, so the tuner follows every cycle (a live heap that jumps between
// two cycles is caught at the next one, not seconds later). It holds a
// pointer so that it is not one of the tiny allocations cleanups may skip.
type sentinel struct{ _ *byte }

func (t *tuner) arm() {
	runtime.AddCleanup(&sentinel{}, func(t *tuner) {
		if t.ctx.Err() == nil {
			t.tune()
			t.arm()
		}
	}, t)
}

// tune sets GOGC for the live heap of the last cycle when it moved by
// more than a tenth (the live heap wobbles from cycle to cycle).
func (t *tuner) tune() {
	metrics.Read(t.sample)
	var v [3]uint64
	for i, s := range t.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	if p := Percent(v[0], v[1]+v[2], t.floor); p*10 < t.percent*9 || p*10 > t.percent*11 {
		debug.SetGCPercent(p)
		t.percent = p
	}
}
