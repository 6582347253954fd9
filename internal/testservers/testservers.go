// Package testservers starts real redis-server and PostgreSQL processes on
// free loopback ports for integration tests and benchmarks. A missing binary
// is an error that says how to install it: tests never skip silently.
package testservers

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flux-order/flux-order/internal/pki"
	"github.com/flux-order/flux-order/internal/redisacl"
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

// Redis is a redis-server child process without persistence.
type Redis struct {
	Addr string
	bin  string
	dir  string
	cmd  *exec.Cmd

	// With ACLs (StartRedisACL): the default user is off, adminPass logs
	// in as "admin" (every command), and users holds the ACL file's lines,
	// so a restart keeps them.
	acl       bool
	adminPass string
	// With TLS (StartRedisTLS): the server listens with TLS only on Addr,
	// with a certificate of the CA in CAFile.
	CAFile   string
	mu       sync.Mutex
	users    map[string]string // user name → password
	aclLines []string
}

// StartRedisACL starts redis-server on a free loopback port the way the
// operator runs a sale's Redis: the default user off, so every client logs
// in. AdminURL logs in with every right (for the tests' own chaos, like
// FLUSHALL); PurchaseURL makes a sale's purchase user from redisacl.
func StartRedisACL() (*Redis, error) {
	r, err := newRedis()
	if err != nil {
		return nil, err
	}
	r.acl = true
	r.adminPass = randomHex()
	r.users = map[string]string{}
	r.aclLines = []string{
		"user default off resetpass nopass resetkeys -@all",
		"user admin on >" + r.adminPass + " ~* &* +@all",
	}
	if err := r.writeACL(); err != nil {
		return nil, err
	}
	return r, r.Start()
}

// AdminURL is a redis:// URL with every right (ACL servers only).
func (r *Redis) AdminURL() string { return "redis://admin:" + r.adminPass + "@" + r.Addr + "/0" }

// PurchaseURL returns the redis:// URL of sale's purchase user, made with
// redisacl.Rules (only the service's commands, only the sale's keys) the
// first time it is asked for. A server without ACLs answers its address
// without credentials.
func (r *Redis) PurchaseURL(sale string) (string, error) {
	if !r.acl {
		return "redis://" + r.Addr + "/0", nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	user := redisacl.User + "-" + sale
	pass, ok := r.users[user]
	if !ok {
		pass = randomHex()
		r.users[user] = pass
		r.aclLines = append(r.aclLines, "user "+user+" "+redisacl.Rules(sale, pass))
		if err := r.writeACL(); err != nil {
			return "", err
		}
		if err := r.adminDo("ACL", "LOAD"); err != nil {
			return "", fmt.Errorf("ACL LOAD: %w", err)
		}
	}
	return "redis://" + user + ":" + pass + "@" + r.Addr + "/0", nil
}

func (r *Redis) aclFile() string { return filepath.Join(r.dir, "users.acl") }

func (r *Redis) writeACL() error {
	return os.WriteFile(r.aclFile(), []byte(strings.Join(r.aclLines, "\n")+"\n"), 0o600)
}

// adminDo runs one command as admin over a plain RESP connection (the
// harness needs no Redis client library).
func (r *Redis) adminDo(args ...string) error {
	c, err := net.DialTimeout("tcp", r.Addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	for _, cmd := range [][]string{{"AUTH", "admin", r.adminPass}, args} {
		fmt.Fprintf(&b, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return err
	}
	rd := bufio.NewReader(c)
	for range 2 {
		line, err := rd.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, "-") {
			return errors.New(strings.TrimSpace(line[1:]))
		}
	}
	return nil
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// StartRedis starts redis-server on a free loopback port, with the default
// user on and no password (for local runs and benchmarks).
func StartRedis() (*Redis, error) {
	r, err := newRedis()
	if err != nil {
		return nil, err
	}
	return r, r.Start()
}

func newRedis() (*Redis, error) {
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
	return &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), bin: bin, dir: dir}, nil
}

// StartRedisTLS starts redis-server as a sale's Redis with spec.redis.tls
// runs: TLS only, a certificate for 127.0.0.1 from a CA of its own (CAFile),
// no client certificates.
func StartRedisTLS() (*Redis, error) {
	r, err := newRedis()
	if err != nil {
		return nil, err
	}
	if err := r.writeTLS(); err != nil {
		return nil, err
	}
	return r, r.Start()
}

func (r *Redis) writeTLS() error {
	caCert, caKey, err := pki.NewCA("flux-order test CA", 24*time.Hour)
	if err != nil {
		return err
	}
	cert, key, err := pki.NewServerCert(caCert, caKey, "redis", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 24*time.Hour)
	if err != nil {
		return err
	}
	r.CAFile = filepath.Join(r.dir, "ca.crt")
	for name, data := range map[string][]byte{"ca.crt": caCert, "tls.crt": cert, "tls.key": key} {
		if err := os.WriteFile(filepath.Join(r.dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// StartRedisTLSACL is StartRedisTLS with an ACL file of lines (user ...),
// as a sale's Redis with spec.redis.tls runs. Its certificate, key and CA
// are tls.crt, tls.key and ca.crt in Dir.
func StartRedisTLSACL(lines ...string) (*Redis, error) {
	r, err := newRedis()
	if err != nil {
		return nil, err
	}
	r.acl = true
	r.aclLines = lines
	if err := r.writeACL(); err != nil {
		return nil, err
	}
	if err := r.writeTLS(); err != nil {
		return nil, err
	}
	return r, r.Start()
}

// Dir is the server's directory (with TLS: tls.crt, tls.key, ca.crt).
func (r *Redis) Dir() string { return r.dir }

// URL is the redis:// (or, with TLS, rediss://) URL of a password-less server.
func (r *Redis) URL() string {
	if r.CAFile != "" {
		return "rediss://" + r.Addr + "/0"
	}
	return "redis://" + r.Addr + "/0"
}

// Start (re)starts the server on its port, with no data.
func (r *Redis) Start() error {
	_, port, _ := net.SplitHostPort(r.Addr)
	listen := []string{"--port", port}
	if r.CAFile != "" {
		listen = []string{"--port", "0", "--tls-port", port, "--tls-auth-clients", "no",
			"--tls-cert-file", filepath.Join(r.dir, "tls.crt"), "--tls-key-file", filepath.Join(r.dir, "tls.key"),
			"--tls-ca-cert-file", r.CAFile}
	}
	r.cmd = exec.Command(r.bin, append(listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--protected-mode", "no", "--maxmemory-policy", "noeviction", "--loglevel", "warning")...)
	r.cmd.Args = append(r.cmd.Args, "--logfile", filepath.Join(r.dir, "redis.log"))
	if r.acl {
		r.cmd.Args = append(r.cmd.Args, "--aclfile", r.aclFile())
	}
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	return Eventually(nil, 10*time.Second, 20*time.Millisecond, "redis-server accepting connections on "+r.Addr, func() error {
		c, err := net.DialTimeout("tcp", r.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	})
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

	// With TLS (StartPostgresTLS): CAFile is the PEM of the CA that signed
	// the server's certificate, and the app role logs in only over TLS.
	CAFile  string
	appPass string
}

// AppRole is the TLS server's application role: not a superuser, cannot
// create roles or databases, owns the databases AppDatabase makes.
const AppRole = "app"

// StartPostgresTLS is StartPostgres serving TLS the way the operator runs a
// sale's database: a CA and a server certificate for 127.0.0.1 and
// localhost made with internal/pki, and pg_hba letting the app role in only
// over TLS (hostssl, password), the postgres superuser only over the local
// socket and plain loopback (the harness's own connection).
func StartPostgresTLS() (*Postgres, error) {
	p, err := initPostgres(true)
	if err != nil {
		return nil, err
	}
	caCert, caKey, err := pki.NewCA("flux-order test CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	cert, key, err := pki.NewServerCert(caCert, caKey, "postgres", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	p.CAFile = filepath.Join(p.dir, "ca.crt")
	p.appPass = randomHex()
	hba := "local all all trust\n" +
		"hostssl all " + AppRole + " 127.0.0.1/32 scram-sha-256\n" +
		"host all postgres 127.0.0.1/32 trust\n"
	for name, f := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"ca.crt":           {caCert, 0o644},
		"data/server.crt":  {cert, 0o600},
		"data/server.key":  {key, 0o600},
		"data/pg_hba.conf": {[]byte(hba), 0o600},
	} {
		if err := p.writeOwned(filepath.Join(p.dir, name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	p.opts += " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
	if err := p.Start(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE ROLE "+AppRole+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '"+p.appPass+"'")
	return p, err
}

// ReplaceCertificate puts a new server certificate and key where the
// server reads them (data/server.crt, data/server.key), as a renewal
// would; the server serves it once it reloads.
func (p *Postgres) ReplaceCertificate(cert, key []byte) error {
	for name, data := range map[string][]byte{"server.crt": cert, "server.key": key} {
		tmp := filepath.Join(p.data(), "."+name)
		if err := p.writeOwned(tmp, data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(p.data(), name)); err != nil {
			return err
		}
	}
	return nil
}

// CertificateFiles are the server's certificate and key.
func (p *Postgres) CertificateFiles() (cert, key string) {
	return filepath.Join(p.data(), "server.crt"), filepath.Join(p.data(), "server.key")
}

// SocketDir holds the server's Unix socket (the superuser logs in there
// without a password).
func (p *Postgres) SocketDir() string { return p.dir }

// writeOwned writes a file the server (which may run as another user) reads.
func (p *Postgres) writeOwned(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return err
	}
	if p.creds != nil {
		return os.Chown(path, int(p.creds.Uid), int(p.creds.Gid))
	}
	return nil
}

// AppDatabase creates a database owned by AppRole (TLS servers only) and
// returns the URL the purchase pods would get: the app role, over TLS,
// verifying the server's certificate and host name against CAFile.
func (p *Postgres) AppDatabase(ctx context.Context, name string) (string, error) {
	if p.CAFile == "" {
		return "", errors.New("AppDatabase needs a server from StartPostgresTLS")
	}
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" OWNER "+AppRole); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=verify-full&sslrootcert=%s",
		AppRole, p.appPass, p.Port, name, url.QueryEscape(p.CAFile)), nil
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
	p, err := initPostgres(fast)
	if err != nil {
		return nil, err
	}
	return p, p.Start()
}

// initPostgres makes the cluster's directory and options; Start starts it.
func initPostgres(fast bool) (*Postgres, error) {
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
	return p, nil
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
// pointers are non-nil (Redis with ACLs, as the operator runs it), runs the
// tests and stops the servers. A server that
// cannot start fails the package (exit 1), it never skips it.
func Main(m interface{ Run() int }, redis **Redis, pg **Postgres) int {
	var err error
	if redis != nil {
		if *redis, err = StartRedisACL(); err != nil {
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

// Eventually calls cond every interval until it returns nil, and returns
// nil. Once timeout has passed, it returns an error naming what was awaited
// and cond's last error, and fails t with it (t.Fatal). Pass a nil t where
// t.Fatal may not be called (TestMain, a goroutine other than the test's,
// a program): the caller then handles the error.
//
// This is the one polling helper of the repository's tests: a test waits
// for a condition, never on a sleep.
func Eventually(t testing.TB, timeout, interval time.Duration, what string, cond func() error) error {
	if t != nil {
		t.Helper()
	}
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			err = fmt.Errorf("waited %v for %s; last: %w", timeout, what, err)
			if t != nil {
				t.Fatal(err)
			}
			return err
		}
		time.Sleep(min(interval, left)) // cond runs once more at the deadline
	}
}

// errNotYet is a boolean condition's "not yet".
var errNotYet = errors.New("the condition does not hold yet")

// Holds adapts a yes/no condition to Eventually (for a condition with no
// more to say than whether it holds).
func Holds(cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}
}

// PrometheusBinary finds name ("prometheus" or "promtool", both in Debian's
// prometheus package), or says how to install it.
func PrometheusBinary(name string) (string, error) {
	return lookPath(name, "apt-get install -y prometheus")
}
