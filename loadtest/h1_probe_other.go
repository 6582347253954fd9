//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package loadtest

// idleAlive cannot peek here without blocking: an idle connection the
// server closed fails its next request instead.
func (h *h1conn) idleAlive() bool { return true }
