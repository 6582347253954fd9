package loadtest

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The histogram is log-linear (HDR-style): values below 2^linearBits ns are
// counted exactly; above, each power of two is split into 2^subBits
// buckets, so a bucket is at most 1/128 (0.8%) of its values wide. Values
// of 2^maxBits ns (about 18 minutes) and more share the last bucket; the
// exact maximum is kept apart.
const (
	subBits    = 7
	linearBits = subBits + 1
	maxBits    = 40
	numBuckets = 1<<linearBits + (maxBits-linearBits)<<subBits
)

// histogram counts latencies in fixed memory (about 35 KB). record is safe
// for concurrent use and does not allocate.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	total  atomic.Int64
	max    atomic.Int64
}

func bucketOf(v int64) int {
	if v < 1<<linearBits {
		return int(max(v, 0))
	}
	n := bits.Len64(uint64(v))
	if n > maxBits {
		return numBuckets - 1
	}
	shift := n - linearBits // >= 1
	top := int(v>>shift) - 1<<subBits
	return 1<<linearBits + (shift-1)<<subBits + top
}

// bucketHigh is the largest value counted in bucket i.
func bucketHigh(i int) int64 {
	if i < 1<<linearBits {
		return int64(i)
	}
	j := i - 1<<linearBits
	shift := j>>subBits + 1
	top := int64(j&(1<<subBits-1) + 1<<subBits)
	if i == numBuckets-1 {
		return math.MaxInt64
	}
	return (top+1)<<shift - 1
}

func (h *histogram) record(d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)].Add(1)
	h.total.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

func (h *histogram) count() int64 { return h.total.Load() }

// merge adds o's counts to h; neither may be recorded into meanwhile.
func (h *histogram) merge(o *histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.total.Add(o.total.Load())
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
}

// quantile returns the value at or below which a fraction q of the values
// lie: the highest value of the bucket holding the ceil(q×count)-th value,
// never more than the exact maximum, so it errs high by at most 0.8%.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen int64
	for i := range h.counts {
		seen += int64(h.counts[i].Load())
		if seen >= rank {
			return time.Duration(min(bucketHigh(i), h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

func (h *histogram) maxValue() time.Duration { return time.Duration(h.max.Load()) }
