package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flux-order/flux-order/loadtest"
)

// -profile: during the first flux-order sell-out, the purchase pod (started
// with --pprof) is asked for a CPU profile of profileSeconds, and the CPU
// time of the pod, PostgreSQL (the postmaster and its children), Redis and
// this process (the load client) is read from /proc every 200 ms for the
// whole load. finish writes, into the -profile directory, the profile
// (sellout-cpu.pprof), `go tool pprof -top` of it (sellout-top.txt) and
// profile.md: both summaries as markdown tables.

// profileSeconds stays under the metrics listener's 10 s write timeout,
// which net/http/pprof refuses to exceed.
const profileSeconds = 8

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTicks = 100

type profiling struct {
	b       *bench
	dir     string
	started time.Time
	sampler *cpuSampler
	fetched chan error
}

func (b *bench) startProfiling(ctx context.Context, podPid int, metricsURL, db string) (*profiling, error) {
	if err := os.MkdirAll(*profile, 0o755); err != nil {
		return nil, err
	}
	pgPid, err := postmasterPid(ctx, db)
	if err != nil {
		return nil, err
	}
	redisPid, err := redisPid(ctx, b.redis.Addr)
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	p := &profiling{b: b, dir: *profile, started: time.Now(), fetched: make(chan error, 1)}
	p.sampler = startSampler([]procGroup{
		{name: "purchase pod (flux-order purchase)", has: func(pid, _ int) bool { return pid == podPid }},
		{name: "PostgreSQL (postmaster and its processes)", has: func(pid, ppid int) bool { return pid == pgPid || ppid == pgPid }},
		{name: "Redis (redis-server)", has: func(pid, _ int) bool { return pid == redisPid }},
		{name: "load client (hack/bench itself)", has: func(pid, _ int) bool { return pid == self }},
	})
	go func() {
		p.fetched <- fetchTo(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", metricsURL, profileSeconds), filepath.Join(p.dir, "sellout-cpu.pprof"))
	}()
	return p, nil
}

// finish stops the sampling (the load is over), waits for the profile and
// writes the summaries; res is the sell-out (nil if it failed).
func (p *profiling) finish(res *loadtest.Result) error {
	usage := p.sampler.stop()
	if err := <-p.fetched; err != nil {
		return fmt.Errorf("pod CPU profile: %w", err)
	}
	if res == nil {
		return nil
	}
	orders := float64(len(res.Created))
	pprofFile := filepath.Join(p.dir, "sellout-cpu.pprof")
	top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=40", pprofFile).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof -top: %v\n%s", err, top)
	}
	if err := os.WriteFile(filepath.Join(p.dir, "sellout-top.txt"), top, 0o644); err != nil {
		return err
	}
	traces, err := exec.Command("go", "tool", "pprof", "-traces", pprofFile).Output()
	if err != nil {
		return fmt.Errorf("go tool pprof -traces: %v", err)
	}
	parts, total, err := attribute(traces)
	if err != nil {
		return err
	}

	var w strings.Builder
	cores := float64(runtime.NumCPU())
	fmt.Fprintf(&w, "Profile of a sell-out of %d seats (-profile %s): %.0f orders in %.2f s, %.0f orders/s, %d cores.\n\n",
		*sellOut, p.dir, orders, usage.wall.Seconds(), orders/usage.wall.Seconds(), runtime.NumCPU())
	fmt.Fprintln(&w, "| process | CPU | share of the machine (cores × wall) | CPU per order |")
	fmt.Fprintln(&w, "|---|---|---|---|")
	capacity := cores * usage.wall.Seconds()
	var podCPU float64
	for i, g := range usage.groups {
		if i == 0 {
			podCPU = g.seconds
		}
		fmt.Fprintf(&w, "| %s | %.2f s | %.0f %% | %.0f µs |\n", g.name, g.seconds, 100*g.seconds/capacity, 1e6*g.seconds/orders)
	}
	fmt.Fprintf(&w, "| everything else on the machine | %.2f s | %.0f %% | |\n", usage.others, 100*usage.others/capacity)
	fmt.Fprintf(&w, "| idle | %.2f s | %.0f %% | |\n\n", usage.idle, 100*usage.idle/capacity)

	fmt.Fprintf(&w, "The pod's CPU profile (the first %d s of the sell-out, %.2f s of samples): each sample is charged to the innermost "+
		"frame of a library or of Flux-Order's own code, runtime and syscall frames in between going to their caller "+
		"(a malloc in encoding/json is JSON).\n\n", profileSeconds, total.Seconds())
	fmt.Fprintln(&w, "| part of the pod | share of its CPU | per order |")
	fmt.Fprintln(&w, "|---|---|---|")
	for _, c := range categories {
		share := parts[c.name].Seconds() / total.Seconds()
		fmt.Fprintf(&w, "| %s | %.0f %% | %.0f µs |\n", c.name, 100*share, 1e6*share*podCPU/orders)
	}
	for _, o := range overlays {
		share := parts[o.name].Seconds() / total.Seconds()
		fmt.Fprintf(&w, "| %s | %.0f %% | %.0f µs |\n", o.name, 100*share, 1e6*share*podCPU/orders)
	}
	p.b.profileReport = w.String()
	return os.WriteFile(filepath.Join(p.dir, "profile.md"), []byte(w.String()), 0o644)
}

// ---- the profile's parts -----------------------------------------------

// categories, by the prefix of a frame's function; a stack goes to its
// innermost categorised frame, and a stack without one to the runtime
// rows by its root.
var categories = []struct{ name, prefixes string }{
	{"HTTP (net/http, net/textproto; fasthttp: the webhook client)", "net/http. net/textproto. github.com/valyala/fasthttp"},
	{"Redis client (go-redis)", "github.com/redis/go-redis/"},
	{"PostgreSQL client (pgx)", "github.com/jackc/"},
	{"JSON (encoding/json)", "encoding/json."},
	{"metrics (Prometheus client)", "github.com/prometheus/"},
	{"Flux-Order's own code", "github.com/flux-order/flux-order/"},
	{"runtime: GC workers and sweeping", ""},
	{"runtime: scheduler, network poller, timers", ""},
	{"other", ""},
}

// overlays are shares of stacks that hold such a frame anywhere, across the
// categories above.
var overlays = []struct{ name, frames string }{
	{"across all: allocation and GC assists (mallocgc, gcAssistAlloc)", "runtime.mallocgc runtime.gcAssistAlloc"},
	{"across all: system calls (syscall, internal/runtime/syscall)", "syscall. internal/runtime/syscall. internal/syscall/"},
	{"across all: GC, workers and assists (gcBgMarkWorker, gcAssistAlloc, bgsweep)", "runtime.gcBgMarkWorker runtime.gcAssistAlloc runtime.bgsweep runtime.bgscavenge"},
}

func category(stack []string) string {
	for _, fn := range stack { // innermost first
		for _, c := range categories {
			for p := range strings.FieldsSeq(c.prefixes) {
				if strings.HasPrefix(fn, p) {
					return c.name
				}
			}
		}
	}
	for _, fn := range stack {
		switch {
		case hasAny(fn, "runtime.gcBgMarkWorker runtime.bgsweep runtime.bgscavenge runtime.gcMarkDone runtime.forEachP"):
			return categories[6].name
		case hasAny(fn, "runtime.schedule runtime.findRunnable runtime.mcall runtime.park_m runtime.netpoll runtime.sysmon runtime.mstart runtime.timerRun runtime.runTimer"):
			return categories[7].name
		}
	}
	return categories[8].name
}

func hasAny(fn, prefixes string) bool {
	for p := range strings.FieldsSeq(prefixes) {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}

var traceValue = regexp.MustCompile(`^\s+([0-9.]+(?:ns|us|µs|ms|s|m|h))\s+(\S.*)$`)

// attribute reads `go tool pprof -traces` and returns the CPU time of each
// category and overlay, and the total.
func attribute(traces []byte) (map[string]time.Duration, time.Duration, error) {
	parts := map[string]time.Duration{}
	var total, value time.Duration
	var stack []string
	flush := func() {
		if len(stack) == 0 {
			return
		}
		parts[category(stack)] += value
		for _, o := range overlays {
			for _, fn := range stack {
				if hasAny(fn, o.frames) {
					parts[o.name] += value
					break
				}
			}
		}
		total += value
		stack = stack[:0]
	}
	sc := bufio.NewScanner(bytes.NewReader(traces))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "-----------+"):
			flush()
		case traceValue.MatchString(line):
			flush()
			m := traceValue.FindStringSubmatch(line)
			d, err := time.ParseDuration(strings.Replace(m[1], "µs", "us", 1))
			if err != nil {
				return nil, 0, fmt.Errorf("pprof -traces: %q: %w", line, err)
			}
			value = d
			stack = append(stack, frame(m[2]))
		case len(stack) > 0 && strings.TrimSpace(line) != "":
			stack = append(stack, frame(line))
		}
	}
	flush()
	if total == 0 {
		return nil, 0, fmt.Errorf("the pod's CPU profile has no samples")
	}
	return parts, total, sc.Err()
}

func frame(s string) string {
	return strings.TrimSuffix(strings.TrimSpace(s), " (inline)")
}

// ---- CPU time from /proc -----------------------------------------------

type procGroup struct {
	name string
	has  func(pid, ppid int) bool
}

// cpuSampler reads the CPU time of each group's processes every 200 ms: a
// process seen at the first read counts from there, one that appears later
// from its start.
type cpuSampler struct {
	groups []procGroup
	done   chan struct{}
	wg     sync.WaitGroup

	start      time.Time
	first      map[int]int64 // ticks at the first read of a process
	last       map[int]int64
	group      map[int]int
	busy0, id0 int64 // /proc/stat at start
}

type cpuUsage struct {
	wall   time.Duration
	groups []struct {
		name    string
		seconds float64
	}
	others, idle float64 // seconds of the whole machine
}

func startSampler(groups []procGroup) *cpuSampler {
	s := &cpuSampler{groups: groups, done: make(chan struct{}), start: time.Now(),
		first: map[int]int64{}, last: map[int]int64{}, group: map[int]int{}}
	s.busy0, s.id0 = machineTicks()
	s.read(true)
	s.wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				s.read(false)
			}
		}
	})
	return s
}

func (s *cpuSampler) read(initial bool) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, ticks, ok := procStat(pid)
		if !ok {
			continue
		}
		for i, g := range s.groups {
			if !g.has(pid, ppid) {
				continue
			}
			if _, seen := s.first[pid]; !seen {
				s.first[pid] = 0
				if initial {
					s.first[pid] = ticks
				}
			}
			s.last[pid], s.group[pid] = ticks, i
			break
		}
	}
}

func (s *cpuSampler) stop() cpuUsage {
	close(s.done)
	s.wg.Wait()
	s.read(false)
	u := cpuUsage{wall: time.Since(s.start)}
	var mine int64
	u.groups = make([]struct {
		name    string
		seconds float64
	}, len(s.groups))
	for i, g := range s.groups {
		u.groups[i].name = g.name
	}
	for pid, last := range s.last {
		d := last - s.first[pid]
		u.groups[s.group[pid]].seconds += float64(d) / clockTicks
		mine += d
	}
	busy, idle := machineTicks()
	u.others = float64(max(0, busy-s.busy0-mine)) / clockTicks
	u.idle = float64(idle-s.id0) / clockTicks
	return u
}

// procStat is the parent and the user + system CPU ticks of pid.
func procStat(pid int) (ppid int, ticks int64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 { // state ppid ... utime (12th) stime (13th)
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return ppid, utime + stime, true
}

// machineTicks is the machine's busy and idle ticks (all cores) from
// /proc/stat.
func machineTicks() (busy, idle int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line)) // cpu user nice system idle iowait irq softirq steal ...
	for i := 1; i < len(f) && i <= 8; i++ {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		if i == 4 || i == 5 {
			idle += v
		} else {
			busy += v
		}
	}
	return busy, idle
}

// postmasterPid is the parent of a backend of db.
func postmasterPid(ctx context.Context, db string) (int, error) {
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return 0, err
	}
	ppid, _, ok := procStat(backend)
	if !ok {
		return 0, fmt.Errorf("no /proc/%d/stat for PostgreSQL's backend", backend)
	}
	return ppid, nil
}

var redisProcessID = regexp.MustCompile(`process_id:([0-9]+)`)

func redisPid(ctx context.Context, addr string) (int, error) {
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.CommandContext(ctx, "redis-cli", "-h", host, "-p", port, "INFO", "server").CombinedOutput()
	m := redisProcessID.FindSubmatch(out)
	if err != nil || m == nil {
		return 0, fmt.Errorf("redis INFO server: %v %s", err, out)
	}
	return strconv.Atoi(string(m[1]))
}

// fetchTo saves the body of a GET of url to path.
func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("%s: %s %s", url, resp.Status, body)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
