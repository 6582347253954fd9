package specs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flux-order/flux-order/internal/pki"
	"github.com/flux-order/flux-order/internal/testservers"
)

// runReloader runs the reloader's script as the datastore's pod runs it
// (sh -c ReloadScript), every second, until the test ends.
func runReloader(t *testing.T, tlsDir, expect string, env []string, command ...string) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", ReloadScript, ReloaderContainer}, command...)...)
	cmd.Env = append(os.Environ(), append(env, "TLS_DIR="+tlsDir, "RELOAD_EVERY=1", "RELOAD_EXPECT="+expect)...)
	log := filepath.Join(t.TempDir(), "reloader.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("reloader's output:\n%s", b)
		}
	})
}

// newIssuer is a second CA with a certificate for 127.0.0.1 (a renewal
// after a CA rotation: the strictest change a reload must carry).
func newIssuer(t *testing.T) (caPEM, certPEM, keyPEM []byte, serial string) {
	t.Helper()
	caPEM, caKey, err := pki.NewCA("the next CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err = pki.NewServerCert(caPEM, caKey, "renewed", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return caPEM, certPEM, keyPEM, c.SerialNumber.String()
}

// waitServed waits until served (the serial number of the certificate a
// new connection gets) is serial.
func waitServed(t *testing.T, served func() (string, error), serial string) {
	t.Helper()
	testservers.Eventually(t, 15*time.Second, 200*time.Millisecond, "the renewed certificate served", func() error {
		got, err := served()
		if err != nil {
			return err
		}
		if got != serial {
			return fmt.Errorf("serving %s, want %s", got, serial)
		}
		return nil
	})
}

func writeBundle(t *testing.T, pems ...[]byte) string {
	t.Helper()
	var b []byte
	for _, p := range pems {
		b = append(b, p...)
	}
	path := filepath.Join(t.TempDir(), "bundle.crt")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Issue 21, defect 3b: a renewal restarted PostgreSQL mid-sale, because it
// read its certificate only at start. The pod's reloader (its real script
// and command, against a real PostgreSQL serving TLS) makes it serve a new
// certificate, from another CA, on new connections without a restart: an
// open connection and the postmaster survive.
func TestReloader_PostgresServesARenewedCertificateWithoutARestart(t *testing.T) {
	pg, err := testservers.StartPostgresTLS()
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	ctx := context.Background()
	dsn, err := pg.AppDatabase(ctx, "reload")
	if err != nil {
		t.Fatal(err)
	}
	oldCA, err := os.ReadFile(pg.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	newCA, cert, key, serial := newIssuer(t)
	// The clients trust both CAs (the trust bundle of a rotation).
	u, _ := url.Parse(dsn)
	q := u.Query()
	q.Set("sslrootcert", writeBundle(t, oldCA, newCA))
	u.RawQuery = q.Encode()
	dsn = u.String()
	served := func() (string, error) {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		tc, ok := c.PgConn().Conn().(*tls.Conn)
		if !ok {
			return "", fmt.Errorf("not a TLS connection: %T", c.PgConn().Conn())
		}
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	before, err := served()
	if err != nil {
		t.Fatal(err)
	}
	open, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(ctx)
	var started time.Time
	if err := open.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&started); err != nil {
		t.Fatal(err)
	}

	// The pod's TLS directory: the Secret's three files.
	dir := t.TempDir()
	crt, k := pg.CertificateFiles()
	for name, target := range map[string]string{"tls.crt": crt, "tls.key": k, "ca.crt": pg.CAFile} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	runReloader(t, dir, PostgresReloadExpect, []string{"PGPORT=" + strconv.Itoa(pg.Port)}, PostgresReloadCommand(pg.SocketDir())...)
	time.Sleep(1500 * time.Millisecond) // its first turn loads what is there
	if got, err := served(); err != nil || got != before {
		t.Fatalf("before the renewal: serial %s (%v), want %s", got, err, before)
	}

	if err := pg.ReplaceCertificate(cert, key); err != nil {
		t.Fatal(err)
	}
	waitServed(t, served, serial)
	var again time.Time
	if err := open.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&again); err != nil {
		t.Fatalf("the connection open before the renewal was cut: %v", err)
	}
	if !again.Equal(started) {
		t.Errorf("PostgreSQL restarted (%s, was %s)", again, started)
	}
}

// Issue 21, defect 3b, with spec.redis.tls: restarting Redis loses every
// seat lock. The reloader (its real script, command and ACL user, against a
// real redis-server) makes Redis serve the new certificate on new
// connections: the keys and an open connection survive, and the reloader's
// user may run CONFIG SET and nothing else.
func TestReloader_RedisServesARenewedCertificateWithoutARestart(t *testing.T) {
	pass := ReloaderPassword("the redis password")
	r, err := testservers.StartRedisTLSACL(
		"user default off resetpass resetkeys -@all",
		"user buyer on >buyer-pass ~* +@all",
		"user "+ReloaderUser+" "+ReloaderRules(pass))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	oldCA, err := os.ReadFile(r.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	newCA, cert, key, serial := newIssuer(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(append(append([]byte{}, oldCA...), newCA...))
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, Username: "buyer", Password: "buyer-pass", PoolSize: 1,
		TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, DisableIdentity: true})
	defer rdb.Close()
	if err := rdb.Set(ctx, "fs:s:ticket:1", "lock", 0).Err(); err != nil {
		t.Fatal(err)
	}
	served := func() (string, error) {
		c, err := tls.Dial("tcp", r.Addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	_, port, _ := net.SplitHostPort(r.Addr)
	p, _ := strconv.Atoi(port)
	runReloader(t, r.Dir(), RedisReloadExpect, []string{"REDISCLI_AUTH=" + pass}, RedisReloadCommand(p, r.Dir())...)
	time.Sleep(1500 * time.Millisecond)

	// The kubelet swaps a Secret volume's files at once; so does this.
	for name, data := range map[string][]byte{"tls.crt": cert, "tls.key": key, "ca.crt": append(append([]byte{}, oldCA...), newCA...)} {
		tmp := filepath.Join(r.Dir(), "."+name)
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(r.Dir(), name)); err != nil {
			t.Fatal(err)
		}
	}
	waitServed(t, served, serial)
	if v, err := rdb.Get(ctx, "fs:s:ticket:1").Result(); err != nil || v != "lock" {
		t.Errorf("the lock after the reload: %q, %v (Redis restarted?)", v, err)
	}
	// The reloader's password opens CONFIG SET only.
	admin := redis.NewClient(&redis.Options{Addr: r.Addr, Username: ReloaderUser, Password: pass,
		TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, DisableIdentity: true})
	defer admin.Close()
	for _, cmd := range [][]any{{"GET", "fs:s:ticket:1"}, {"CONFIG", "GET", "*"}, {"FLUSHALL"}, {"ACL", "LIST"}} {
		if err := admin.Do(ctx, cmd...).Err(); err == nil {
			t.Errorf("the reloader's user ran %v", cmd)
		}
	}
}
