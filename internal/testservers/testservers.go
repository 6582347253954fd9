// Package testservers starts real redis-server and PostgreSQL processes on
// free loopback ports for integration tests and benchmarks. A missing binary
// is an error that says how to install it: tests never skip silently.
package testservers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func lookPath(name, install string, extra ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, pattern := range extra {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return m[len(m)-1], nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH: install it with `%s`", name, install)
}

func waitTCP(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never accepted connections: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Redis is a redis-server child process without persistence.
type Redis struct {
	Addr string
	bin  string
	dir  string
	cmd  *exec.Cmd
}

// StartRedis starts redis-server on a free loopback port.
func StartRedis() (*Redis, error) {
	bin, err := lookPath("redis-server", "apt-get install -y redis-server")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fo-redis-")
	if err != nil {
		return nil, err
	}
	r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), bin: bin, dir: dir}
	return r, r.Start()
}

// Start (re)starts the server on its port, with no data.
func (r *Redis) Start() error {
	_, port, _ := net.SplitHostPort(r.Addr)
	r.cmd = exec.Command(r.bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--protected-mode", "no", "--maxmemory-policy", "noeviction", "--loglevel", "warning")
	r.cmd.Args = append(r.cmd.Args, "--logfile", filepath.Join(r.dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return waitTCP(ctx, r.Addr)
}

// Kill stops the server abruptly, losing every key, as a crash would.
func (r *Redis) Kill() error {
	if r.cmd == nil || r.cmd.Process == nil {
		return nil
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
	return nil
}

// Close stops the server and removes its directory.
func (r *Redis) Close() error {
	err := r.Kill()
	return errors.Join(err, os.RemoveAll(r.dir))
}

// Postgres is a PostgreSQL cluster in a temporary directory. As root (CI)
// it runs as the "postgres" system user, since PostgreSQL refuses root.
type Postgres struct {
	Port  int
	bin   string // directory of initdb, pg_ctl
	dir   string
	opts  string // postgres server options
	creds *syscall.Credential
}

// StartPostgres runs initdb into a temporary directory and starts the
// server on a free loopback port, tuned for tests (no fsync).
func StartPostgres() (*Postgres, error) {
	return startPostgres(true)
}

// StartPostgresDurable is StartPostgres with fsync and synchronous commit on,
// for benchmarks that must count what a real deployment pays.
func StartPostgresDurable() (*Postgres, error) {
	return startPostgres(false)
}

func startPostgres(fast bool) (*Postgres, error) {
	const install = "apt-get install -y postgresql"
	pgCtl, err := lookPath("pg_ctl", install, "/usr/lib/postgresql/*/bin/pg_ctl")
	if err != nil {
		return nil, err
	}
	p := &Postgres{bin: filepath.Dir(pgCtl)}
	if p.Port, err = FreePort(); err != nil {
		return nil, err
	}
	if p.dir, err = os.MkdirTemp("", "fo-pg-"); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres system user (`%s`): %w", install, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.creds = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(p.dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if err := p.run("initdb", "-D", p.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return nil, err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=300", p.Port, p.dir)
	if fast {
		opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	}
	p.opts = opts
	return p, p.Start()
}

func (p *Postgres) data() string { return filepath.Join(p.dir, "data") }

func (p *Postgres) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(p.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.creds}
	cmd.Dir = p.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", name, err, out)
	}
	return nil
}

// Start (re)starts the server on its port and data directory.
func (p *Postgres) Start() error {
	return p.run("pg_ctl", "-D", p.data(), "-l", filepath.Join(p.dir, "server.log"), "-w", "-t", "60", "-o", p.opts, "start")
}

// Stop shuts the server down: connections are cut, in-flight transactions
// roll back.
func (p *Postgres) Stop() error {
	return p.run("pg_ctl", "-D", p.data(), "-m", "fast", "-w", "stop")
}

// Close stops the server and removes its directory.
func (p *Postgres) Close() error {
	err := p.Stop()
	return errors.Join(err, os.RemoveAll(p.dir))
}

// URL is the connection URL of database db.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, db)
}

// CreateDatabase creates an empty database and returns its URL.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return p.URL(name), nil
}

// Main is a test package's TestMain body: it starts the servers whose
// pointers are non-nil, runs the tests and stops the servers. A server that
// cannot start fails the package (exit 1), it never skips it.
func Main(m interface{ Run() int }, redis **Redis, pg **Postgres) int {
	var err error
	if redis != nil {
		if *redis, err = StartRedis(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: real Redis needed:", err)
			return 1
		}
		defer (*redis).Close()
	}
	if pg != nil {
		if *pg, err = StartPostgres(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: real PostgreSQL needed:", err)
			return 1
		}
		defer (*pg).Close()
	}
	return m.Run()
}
