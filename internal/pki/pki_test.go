package pki

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"time"
)

func TestNewServerCert_VerifiesAgainstItsCAForEveryNameAndIP(t *testing.T) {
	caCert, caKey, err := NewCA("sale-ca", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, _, err := NewServerCert(caCert, caKey, "pg", []string{"localhost", "demo-postgres.sales.svc"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caCert) {
		t.Fatal("CA PEM not accepted by a cert pool")
	}
	c, err := ParseCertificate(cert)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "demo-postgres.sales.svc", "127.0.0.1"} {
		if _, err := c.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("verify for %q: want ok, got %v", name, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{DNSName: "evil.example", Roots: pool}); err == nil {
		t.Error("verify for a name not in the certificate: want an error, got ok")
	}
}

func TestNewServerCert_DoesNotVerifyAgainstAnotherCA(t *testing.T) {
	caCert, caKey, _ := NewCA("a", time.Hour)
	other, _, _ := NewCA("b", time.Hour)
	cert, _, err := NewServerCert(caCert, caKey, "pg", []string{"localhost"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(other)
	c, _ := ParseCertificate(cert)
	if _, err := c.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: pool}); err == nil {
		t.Fatal("a certificate verified against a CA that did not sign it")
	}
}

func TestNewServerCert_ServesTLSThatAVerifyingClientAccepts(t *testing.T) {
	caCert, caKey, _ := NewCA("sale-ca", time.Hour)
	certPEM, keyPEM, err := NewServerCert(caCert, caKey, "srv", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("tls.X509KeyPair on our PEM: %v", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("ok"))
		_ = c.Close()
	}()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caCert)
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("verifying client refused our server: %v", err)
	}
	defer conn.Close()
	if b, _ := io.ReadAll(conn); string(b) != "ok" {
		t.Fatalf("read %q, want ok", b)
	}
}

func TestNewServerCert_ExpiresNoLaterThanItsCA(t *testing.T) {
	caCert, caKey, _ := NewCA("short", time.Hour)
	cert, _, err := NewServerCert(caCert, caKey, "srv", []string{"localhost"}, nil, 100*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := ParseCertificate(caCert)
	c, _ := ParseCertificate(cert)
	if c.NotAfter.After(ca.NotAfter) {
		t.Fatalf("server cert NotAfter %v is after the CA's %v", c.NotAfter, ca.NotAfter)
	}
}

func TestExpiresBefore_TrueOnlyPastNotAfter(t *testing.T) {
	caCert, _, _ := NewCA("ca", time.Hour)
	now := time.Now()
	for _, tc := range []struct {
		at   time.Time
		want bool
	}{{now, false}, {now.Add(59 * time.Minute), false}, {now.Add(61 * time.Minute), true}} {
		got, err := ExpiresBefore(caCert, tc.at)
		if err != nil || got != tc.want {
			t.Errorf("ExpiresBefore(now+%v) = %v, %v; want %v", tc.at.Sub(now).Round(time.Minute), got, err, tc.want)
		}
	}
	if _, err := ExpiresBefore([]byte("not pem"), now); err == nil {
		t.Error("ExpiresBefore on garbage: want an error")
	}
}

func TestNewCA_RefusesNonPositiveValidity(t *testing.T) {
	if _, _, err := NewCA("ca", 0); err == nil {
		t.Fatal("NewCA with zero validity: want an error")
	}
}
