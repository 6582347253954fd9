package loadtest

import (
	"math"
	"testing"
	"time"
)

func histogramOf(values ...time.Duration) *histogram {
	h := new(histogram)
	for _, v := range values {
		h.record(v)
	}
	return h
}

func TestHistogram_QuantilesOfKnownInputs(t *testing.T) {
	var exact, ms []time.Duration
	for i := 1; i <= 100; i++ {
		exact = append(exact, time.Duration(i)) // below 256 ns: one bucket per value
		ms = append(ms, time.Duration(i)*time.Millisecond)
	}
	cases := []struct {
		name   string
		h      *histogram
		q      float64
		lo, hi time.Duration // the answer may err high by one bucket (< 0.8%)
	}{
		{"median of 1..100 ns is exact", histogramOf(exact...), 0.50, 50, 50},
		{"p90 of 1..100 ns is exact", histogramOf(exact...), 0.90, 90, 90},
		{"p99 of 1..100 ns is exact", histogramOf(exact...), 0.99, 99, 99},
		{"p100 of 1..100 ns is the max", histogramOf(exact...), 1, 100, 100},
		{"p0 of 1..100 ns is the min", histogramOf(exact...), 0, 1, 1},
		{"median of 1..100 ms within 0.8%", histogramOf(ms...), 0.50, 50 * time.Millisecond, 50*time.Millisecond + 400*time.Microsecond},
		{"p90 of 1..100 ms within 0.8%", histogramOf(ms...), 0.90, 90 * time.Millisecond, 90*time.Millisecond + 720*time.Microsecond},
		{"p99 of 1..100 ms within 0.8%", histogramOf(ms...), 0.99, 99 * time.Millisecond, 99*time.Millisecond + 792*time.Microsecond},
		{"a single value is every quantile, exactly", histogramOf(1234567 * time.Nanosecond), 0.5, 1234567, 1234567},
		{"an empty histogram answers zero", histogramOf(), 0.99, 0, 0},
		{"p99 of 99 fast and 1 slow is fast", histogramOf(append(repeat(time.Millisecond, 99), time.Second)...), 0.99, time.Millisecond, time.Millisecond + 8*time.Microsecond},
		{"p99 of 98 fast and 2 slow is slow", histogramOf(append(repeat(time.Millisecond, 98), time.Second, time.Second)...), 0.99, time.Second, time.Second},
		{"an hour lands in the last buckets, clamped to the max", histogramOf(time.Hour), 0.5, time.Hour, time.Hour},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.h.quantile(c.q); got < c.lo || got > c.hi {
				t.Fatalf("expected quantile(%v) in [%v, %v], got %v", c.q, c.lo, c.hi, got)
			}
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func TestHistogram_MaxIsExact(t *testing.T) {
	h := histogramOf(3*time.Millisecond, 123456789*time.Nanosecond, time.Microsecond)
	if got := h.maxValue(); got != 123456789*time.Nanosecond {
		t.Fatalf("expected max 123456789ns, got %v", got)
	}
}

func TestHistogram_EveryBucketHoldsItsValuesWithin0_8Percent(t *testing.T) {
	for v := int64(1); v < 1<<maxBits; v = v*21/20 + 1 {
		i := bucketOf(v)
		high := bucketHigh(i)
		low := int64(0)
		if i > 0 {
			low = bucketHigh(i-1) + 1
		}
		if v < low || v > high {
			t.Fatalf("value %d in bucket %d = [%d, %d]", v, i, low, high)
		}
		if width := float64(high - low + 1); width/float64(low) > 1.0/128+1e-12 && low >= 256 {
			t.Fatalf("bucket %d = [%d, %d] is %.2f%% wide, expected at most 0.78%%", i, low, high, 100*width/float64(low))
		}
	}
	if got := bucketOf(math.MaxInt64); got != numBuckets-1 {
		t.Fatalf("expected the largest value in the last bucket %d, got %d", numBuckets-1, got)
	}
	if got := bucketOf(-5); got != 0 {
		t.Fatalf("expected a negative value (clock step) in bucket 0, got %d", got)
	}
}

func TestHistogram_MergeAddsCountsAndKeepsTheMax(t *testing.T) {
	a := histogramOf(time.Millisecond, 2*time.Millisecond)
	b := histogramOf(7 * time.Second)
	a.merge(b)
	if a.count() != 3 || a.maxValue() != 7*time.Second || a.quantile(1) != 7*time.Second {
		t.Fatalf("expected 3 values up to 7s, got %d up to %v (p100 %v)", a.count(), a.maxValue(), a.quantile(1))
	}
}

func TestHistogram_RecordDoesNotAllocate(t *testing.T) {
	h := new(histogram)
	if n := testing.AllocsPerRun(1000, func() { h.record(1500 * time.Microsecond) }); n != 0 {
		t.Fatalf("expected 0 allocations per record, got %v", n)
	}
}
