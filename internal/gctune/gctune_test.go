package gctune

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, roots, floor uint64
		want               int
	}{
		{4 * mib, 0, 32 * mib, 700},        // the pod's few MB: the heap may grow to the floor
		{4 * mib, 4 * mib, 32 * mib, 350},  // stacks and globals count toward the goal too
		{1 * mib, 0, 32 * mib, 800},        // capped: Go's minimum heap (4 MiB × GOGC/100) is the floor
		{0, 0, 32 * mib, 800},              // before the first cycle
		{1 * mib, 35 * mib, 32 * mib, 100}, // roots alone exceed the floor
		{16 * mib, 0, 32 * mib, 100},       // twice the live heap is the floor already
		{100 * mib, 0, 32 * mib, 100},      // above the floor: Go's default
		{12 * mib, 0, 32 * mib, 166},       // in between
		{1 * mib, 0, 2 * mib, 100},         // a floor under Go's minimum heap: nothing to do
	} {
		if got := Percent(c.live, c.roots, c.floor); got != c.want {
			t.Errorf("Percent(live %d MiB, roots %d MiB, floor %d MiB) = %d, want %d", c.live>>20, c.roots>>20, c.floor>>20, got, c.want)
		}
	}
}

// cycles allocates n short-lived 4 KiB buffers and returns how many GC
// cycles ran meanwhile.
func cycles(n int) uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	var keep []byte
	for i := range n {
		b := make([]byte, 4096)
		b[i%4096] = byte(i)
		keep = b
	}
	runtime.KeepAlive(keep)
	metrics.Read(s)
	return s[0].Value.Uint64() - before
}

// atDefaults runs t with no GOGC or GOMEMLIMIT in the environment, at
// GOGC=100, and restores the process's settings after it.
func atDefaults(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	prev := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(prev); debug.SetMemoryLimit(limit) })
	runtime.GC()
}

// TestStart_FloorSpacesCycles: with the floor the same allocations take a
// fraction of the cycles they take at GOGC=100 (this test's live heap is
// well under a MB, so GOGC=100 collects about every 4 MB, the minimum).
func TestStart_FloorSpacesCycles(t *testing.T) {
	atDefaults(t)
	const n = 100_000 // 400 MB allocated
	base := cycles(n)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Start(ctx, 256<<20, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if p := gogc(); p < 400 {
		t.Fatalf("GOGC after Start with a 256 MiB floor = %d, want ≥ 400 for this test's small live heap", p)
	}
	tuned := cycles(n)
	t.Logf("GC cycles for 400 MB of garbage: %d at GOGC=100, %d with the floor", base, tuned)
	if tuned*4 > base {
		t.Fatalf("with a 256 MiB floor %d cycles, at GOGC=100 %d: want at most a quarter", tuned, base)
	}
}

// TestStart_GOGCWins: an explicit GOGC is left alone.
func TestStart_GOGCWins(t *testing.T) {
	t.Setenv("GOGC", "100")
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	Start(context.Background(), 64<<20, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if p := gogc(); p != 100 {
		t.Fatalf("GOGC=100 in the environment, Start set it to %d", p)
	}
}

var retained [][]byte

// TestStart_FollowsEveryCycle: a live heap that jumps past the floor gets
// Go's default GOGC at the next cycles, not at some later tick.
func TestStart_FollowsEveryCycle(t *testing.T) {
	atDefaults(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Start(ctx, 64<<20, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if p := gogc(); p < 400 {
		t.Fatalf("GOGC after Start with a 64 MiB floor = %d, want ≥ 400", p)
	}
	for range 48 { // 48 MiB live: more than half the floor
		retained = append(retained, make([]byte, 1<<20))
	}
	defer func() { retained = nil }()
	// Each look runs a cycle, whose cleanup (on its own goroutine)
	// re-tunes.
	testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, "GOGC back to 100 with 48 MiB live and a 64 MiB floor", func() error {
		runtime.GC()
		if p := gogc(); p != 100 {
			return fmt.Errorf("GOGC %d", p)
		}
		return nil
	})
}

// gogc is the process's GOGC, read without setting it.
func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}
