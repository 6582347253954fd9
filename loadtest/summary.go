package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Summary is a finished test, for people (WriteText) and machines (JSON).
type Summary struct {
	URL             string  `json:"url"`
	Scenario        string  `json:"scenario"`
	Model           string  `json:"model"` // "closed" or "open"
	Concurrency     int     `json:"concurrency"`
	Rate            float64 `json:"rate,omitempty"` // scheduled requests/s (open model)
	Seats           int64   `json:"seats,omitempty"`
	StoppedBy       string  `json:"stoppedBy"` // duration, requests, sold-out or interrupted
	Requests        int64   `json:"requests"`
	DurationSeconds float64 `json:"durationSeconds"`
	// LastCreatedSeconds is when the last 201 arrived, from the start: a
	// sell-out's length without the delay of noticing it sold out (the
	// availability is asked every 200 ms), which DurationSeconds includes.
	LastCreatedSeconds float64 `json:"lastCreatedSeconds,omitempty"`
	RequestsPerSecond  float64 `json:"requestsPerSecond"`
	Connections        int64   `json:"connections"` // opened; keep-alive keeps it near concurrency
	// The client's own CPU (user + system) and its share of wall time ×
	// cores: near 100% means the client, not the server, set the pace.
	ClientCPUSeconds float64 `json:"clientCpuSeconds"`
	ClientCPUPercent float64 `json:"clientCpuPercent"`
	Cores            int     `json:"cores"`

	// Retried counts requests sent again with their purchase's key because
	// its outcome was in doubt; Resolved the orders found by GET
	// /v1/orders/{id} after a 503 named them (counted with the 201s in the
	// audit); InDoubt the purchases whose outcome stayed unknown.
	Retried  int64 `json:"retried"`
	Resolved int64 `json:"resolved"`
	InDoubt  int64 `json:"inDoubt"`

	Latency  OutcomeSummary            `json:"latency"`  // every answer
	Outcomes map[string]OutcomeSummary `json:"outcomes"` // by Outcome.Key, all present
	Audit    *AuditReport              `json:"audit,omitempty"`
	// Queue is the queue scenario's view of the waiting room; its
	// requests, outcomes and latency are the purchases only.
	Queue *QueueSummary `json:"queue,omitempty"`
	// Holds is the hold-confirm scenario's view of the checkouts; its
	// requests, outcomes and latency are the confirmations only.
	Holds *HoldSummary `json:"holds,omitempty"`
}

// OutcomeSummary is the count and latency of one outcome.
type OutcomeSummary struct {
	Count     int64   `json:"count"`
	Share     float64 `json:"share"` // of all requests, 0..1
	PerSecond float64 `json:"perSecond"`
	P50Ms     float64 `json:"p50Ms"`
	P90Ms     float64 `json:"p90Ms"`
	P99Ms     float64 `json:"p99Ms"`
	MaxMs     float64 `json:"maxMs"`
	Example   string  `json:"example,omitempty"` // first answer seen, for unexpected outcomes
}

// Count is the number of answers with outcome o.
func (s Summary) Count(o Outcome) int64 { return s.Outcomes[o.Key()].Count }

// Interrupted says whether the test was cut short by a signal.
func (s Summary) Interrupted() bool { return s.StoppedBy == stopInterrupted }

func (e *engine) summary(elapsed, cpu time.Duration) Summary {
	s := Summary{
		URL:                e.t.base,
		Scenario:           string(e.cfg.Scenario),
		Model:              "closed",
		Concurrency:        e.cfg.Concurrency,
		StoppedBy:          e.stopReason,
		DurationSeconds:    elapsed.Seconds(),
		LastCreatedSeconds: time.Duration(e.lastCreated.Load()).Seconds(),
		Connections:        e.conns.Load(),
		Cores:              runtime.NumCPU(),
		Outcomes:           make(map[string]OutcomeSummary, numOutcomes),
	}
	if e.open {
		s.Model, s.Rate = "open", e.cfg.Rate
	}
	if e.cfg.Scenario == SellOut || e.cfg.Scenario == Mixed || e.cfg.Scenario == HoldConfirm {
		s.Seats = e.cfg.Seats
	}
	all := new(histogram)
	for o := range numOutcomes {
		s.Requests += e.stats[o].count()
		all.merge(&e.stats[o])
	}
	s.RequestsPerSecond = perSecond(s.Requests, elapsed)
	s.ClientCPUSeconds = cpu.Seconds()
	if elapsed > 0 {
		s.ClientCPUPercent = round(100*cpu.Seconds()/(elapsed.Seconds()*float64(s.Cores)), 1)
	}
	for o := range numOutcomes {
		os := summarize(&e.stats[o], s.Requests, elapsed)
		if p := e.examples[o].Load(); p != nil {
			os.Example = *p
		}
		s.Outcomes[o.Key()] = os
	}
	s.Latency = summarize(all, s.Requests, elapsed)
	return s
}

func summarize(h *histogram, total int64, elapsed time.Duration) OutcomeSummary {
	n := h.count()
	s := OutcomeSummary{Count: n, PerSecond: perSecond(n, elapsed)}
	if n == 0 {
		return s
	}
	s.Share = float64(n) / float64(total)
	s.P50Ms = ms(h.quantile(0.50))
	s.P90Ms = ms(h.quantile(0.90))
	s.P99Ms = ms(h.quantile(0.99))
	s.MaxMs = ms(h.maxValue())
	return s
}

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return round(float64(n)/d.Seconds(), 1)
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func round(v float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(v*p) / p
}

// WriteJSON writes s as one JSON object on one line.
func WriteJSON(w io.Writer, s Summary) error {
	return json.NewEncoder(w).Encode(s)
}

// WriteText writes s as a table a person reads at a glance.
func WriteText(w io.Writer, s Summary) error {
	var b strings.Builder
	model := fmt.Sprintf("closed model, %d connections", s.Concurrency)
	if s.Model == "open" {
		model = fmt.Sprintf("open model, %s/s scheduled, at most %d in flight", thousands(int64(math.Round(s.Rate))), s.Concurrency)
	}
	scenario := s.Scenario
	if s.Seats > 0 {
		scenario += fmt.Sprintf(" (%s seats)", thousands(s.Seats))
	}
	fmt.Fprintf(&b, "%s on %s · %s · stopped by %s\n", scenario, s.URL, model, s.StoppedBy)
	fmt.Fprintf(&b, "  requests    %s in %.2fs = %s/s (%s connections opened)\n",
		thousands(s.Requests), s.DurationSeconds, thousands(int64(math.Round(s.RequestsPerSecond))), thousands(s.Connections))
	if s.Retried > 0 || s.Resolved > 0 || s.InDoubt > 0 {
		fmt.Fprintf(&b, "  in doubt    %s retried with their key, %s orders resolved after a 503, %s left unknown\n",
			thousands(s.Retried), thousands(s.Resolved), thousands(s.InDoubt))
	}
	fmt.Fprintf(&b, "  client CPU  %.2fs = %.0f%% of %d cores\n\n", s.ClientCPUSeconds, s.ClientCPUPercent, s.Cores)
	fmt.Fprintf(&b, "  %-17s %11s %7s %9s %8s %8s %8s %8s\n", "outcome", "count", "share", "per s", "p50", "p90", "p99", "max")
	row := func(label string, o OutcomeSummary) {
		if o.Count == 0 {
			fmt.Fprintf(&b, "  %-17s %11s\n", label, "0")
			return
		}
		fmt.Fprintf(&b, "  %-17s %11s %6.1f%% %9s %8s %8s %8s %8s", label, thousands(o.Count), 100*o.Share,
			thousands(int64(math.Round(o.PerSecond))), fmtMs(o.P50Ms), fmtMs(o.P90Ms), fmtMs(o.P99Ms), fmtMs(o.MaxMs))
		if o.Example != "" {
			fmt.Fprintf(&b, "  e.g. %s", o.Example)
		}
		b.WriteByte('\n')
	}
	for o := range numOutcomes {
		row(o.String(), s.Outcomes[o.Key()])
	}
	row("all", s.Latency)
	if s.Queue != nil {
		b.WriteByte('\n')
		b.WriteString(s.Queue.text())
	}
	if s.Holds != nil {
		b.WriteByte('\n')
		b.WriteString(s.Holds.text())
	}
	if s.Audit != nil {
		b.WriteByte('\n')
		b.WriteString(s.Audit.text())
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// fmtMs shows a latency with about three significant digits.
func fmtMs(v float64) string {
	d := time.Duration(v * float64(time.Millisecond))
	switch {
	case d < 10*time.Microsecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// thousands formats n with comma separators: 1234567 → 1,234,567.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// shortLabels name the outcomes on the progress line.
var shortLabels = [numOutcomes]string{"201", "locked", "held", "sold", "sold_out", "limit", "4xx", "5xx", "err"}

// NewProgressPrinter returns a Config.Progress that writes one line per
// call: redrawn in place on a terminal, appended otherwise (logs, CI).
func NewProgressPrinter(w io.Writer, terminal bool) func(Snapshot) {
	var last Snapshot
	return func(s Snapshot) {
		if s.Done {
			if terminal {
				_, _ = io.WriteString(w, "\r\033[K")
			}
			return
		}
		var b strings.Builder
		if terminal {
			b.WriteString("\r\033[K")
		}
		rate := 0.0
		if dt := s.Elapsed - last.Elapsed; dt > 0 {
			rate = float64(s.Total-last.Total) / dt.Seconds()
		}
		fmt.Fprintf(&b, "%6.1fs %s req %s/s", s.Elapsed.Seconds(), thousands(s.Total), thousands(int64(math.Round(rate))))
		for o, n := range s.Counts {
			if n > 0 {
				fmt.Fprintf(&b, " · %s %s", shortLabels[o], thousands(n))
			}
		}
		if !terminal {
			b.WriteByte('\n')
		}
		_, _ = io.WriteString(w, b.String())
		last = s
	}
}
