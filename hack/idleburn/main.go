// Command idleburn keeps one thread busy for a fraction of each period and
// does nothing else: no I/O, no memory traffic to speak of. Run at the
// lowest CPU priority it measures what the spare CPU of a machine is worth
// to a sale on it (docs/delivery.md, "What spare CPU is worth on this machine"):
//
//	GOMAXPROCS=1 chrt --idle 0 go run ./hack/idleburn -busy 1ms -period 2ms &
//	go run ./hack/bench -steps delivery -runs 1
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	busy := flag.Duration("busy", time.Millisecond, "time spent computing in each period")
	period := flag.Duration("period", 2*time.Millisecond, "length of each period (busy = period: one whole core)")
	flag.Parse()
	if *busy <= 0 || *period < *busy {
		fmt.Fprintln(os.Stderr, "idleburn: need 0 < -busy ≤ -period")
		os.Exit(2)
	}
	x := uint64(1)
	for {
		start := time.Now()
		for time.Since(start) < *busy {
			for range 1000 { // an LCG step: pure arithmetic, in registers
				x = x*6364136223846793005 + 1442695040888963407
			}
		}
		if rest := *period - *busy; rest > 0 {
			time.Sleep(rest)
		}
		if x == 0 { // practically never true; keeps the loop from being optimized away
			fmt.Println(x)
		}
	}
}
