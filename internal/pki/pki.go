// Package pki makes the small certificate authorities Flux-Order needs: one
// per sale, signing the server certificates of the sale's PostgreSQL (and,
// opt-in, Redis). The operator stores its output in Secrets; the test harness
// uses it to serve PostgreSQL over TLS. Keys are ECDSA P-256; every function
// takes and returns PEM, the form Secrets and server config files hold.
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Backdate is how far NotBefore lies before the time a certificate is made,
// so that a peer whose clock is slightly behind accepts it.
const Backdate = 5 * time.Minute

// ErrNoCertificate is returned when PEM input holds no CERTIFICATE block.
var ErrNoCertificate = errors.New("pki: no certificate in PEM")

// ErrNoKey is returned when PEM input holds no private key block.
var ErrNoKey = errors.New("pki: no private key in PEM")

// NewCA makes a self-signed certificate authority valid for validFor from
// now (minus a few minutes of clock skew). It may sign certificates only,
// not intermediate CAs (MaxPathLen 0).
func NewCA(commonName string, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	return NewCAAt(time.Now(), commonName, validFor)
}

// NewCAAt is NewCA with now as the time it is made (the operator's clock).
func NewCAAt(now time.Time, commonName string, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	if validFor <= 0 {
		return nil, nil, fmt.Errorf("pki: CA validity %v must be positive", validFor)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: CA key: %w", err)
	}
	tmpl, err := template(now, commonName, validFor)
	if err != nil {
		return nil, nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.MaxPathLen = 0
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: sign CA: %w", err)
	}
	return encode(der, key)
}

// NewServerCert makes a TLS server certificate for dnsNames and ips, signed
// by the CA given as PEM (as returned by NewCA). Clients verifying the full
// chain and host name (sslmode=verify-full, rediss:// with a CA file) accept
// it for any of dnsNames and ips. It expires after validFor, or with the CA
// if that comes first (callers that renew must check what they got: see
// NotAfter).
func NewServerCert(caCertPEM, caKeyPEM []byte, commonName string, dnsNames []string, ips []net.IP, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	return NewServerCertAt(time.Now(), caCertPEM, caKeyPEM, commonName, dnsNames, ips, validFor)
}

// NewServerCertAt is NewServerCert with now as the time it is issued.
func NewServerCertAt(now time.Time, caCertPEM, caKeyPEM []byte, commonName string, dnsNames []string, ips []net.IP, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	if validFor <= 0 {
		return nil, nil, fmt.Errorf("pki: server certificate validity %v must be positive", validFor)
	}
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, nil, errors.New("pki: a server certificate needs at least one DNS name or IP")
	}
	ca, err := ParseCertificate(caCertPEM)
	if err != nil {
		return nil, nil, err
	}
	caKey, err := parseKey(caKeyPEM)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: server key: %w", err)
	}
	tmpl, err := template(now, commonName, validFor)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	tmpl.DNSNames = append([]string(nil), dnsNames...)
	tmpl.IPAddresses = append([]net.IP(nil), ips...)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: sign server certificate: %w", err)
	}
	return encode(der, key)
}

// ExpiresBefore reports whether the first certificate in certPEM is no
// longer valid at t (its NotAfter is before t). The operator renews when
// ExpiresBefore(cert, now+renewBefore) is true.
func ExpiresBefore(certPEM []byte, t time.Time) (bool, error) {
	c, err := ParseCertificate(certPEM)
	if err != nil {
		return false, err
	}
	return c.NotAfter.Before(t), nil
}

// ParseCertificate returns the first certificate in certPEM.
func ParseCertificate(certPEM []byte) (*x509.Certificate, error) {
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, ErrNoCertificate
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("pki: parse certificate: %w", err)
			}
			return c, nil
		}
	}
}

// ParseCertificates returns every certificate in certPEM (a bundle, such
// as a trust file holding an old and a new CA), in order.
func ParseCertificates(certPEM []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, ErrNoCertificate
	}
	return out, nil
}

// Bundle is the PEM of certs, one after the other: the form of a trust
// file (PostgreSQL's sslrootcert, Redis' tls-ca-cert-file, Go's
// AppendCertsFromPEM all read every certificate in it).
func Bundle(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// SignedBy reports whether cert's signature verifies with ca's key (and
// cert names ca as its issuer).
func SignedBy(cert, ca *x509.Certificate) bool {
	return bytes.Equal(cert.RawIssuer, ca.RawSubject) && cert.CheckSignatureFrom(ca) == nil
}

func parseKey(keyPEM []byte) (*ecdsa.PrivateKey, error) {
	for rest := keyPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, ErrNoKey
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("pki: parse key: %w", err)
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("pki: key is %T, want ECDSA", k)
			}
			return ek, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("pki: parse key: %w", err)
			}
			return k, nil
		}
	}
}

func template(now time.Time, commonName string, validFor time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"flux-order"}},
		NotBefore:    now.Add(-Backdate),
		NotAfter:     now.Add(validFor),
	}, nil
}

// encode returns the certificate and the key (PKCS #8, "PRIVATE KEY", the
// form PostgreSQL and Redis read) as PEM.
func encode(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}), nil
}
