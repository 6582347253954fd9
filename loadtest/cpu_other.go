//go:build !unix

package loadtest

import "time"

// cpuTime is unknown here: the summary then reports 0.
func cpuTime() time.Duration { return 0 }
