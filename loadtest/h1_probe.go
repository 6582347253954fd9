//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package loadtest

import (
	"crypto/tls"
	"syscall"
)

// idleAlive reports whether an idle connection may still carry a request:
// the server has neither closed it nor sent anything unasked (a TLS
// close_notify, a 408 before closing), which net/http's client also takes
// as the connection's end. One non-blocking peek at the socket, no wait.
func (h *h1conn) idleAlive() bool {
	if h.br.Buffered() > 0 {
		return false
	}
	c := h.c
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	if err := rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read yet: open. A byte, an end of stream (no error)
		// or a reset: not for another request.
		alive = err == syscall.EAGAIN || err == syscall.EINTR
		return true
	}); err != nil {
		return false
	}
	return alive
}
