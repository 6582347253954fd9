package testservers

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"testing"
)

// StartSelf starts this test binary again as a child process with env
// (NAME=value) added, for a benchmark that needs its other side (a server,
// or clients) out of the measured process; the child's TestMain reads the
// variable and runs that side instead of the tests. It returns the child's
// stdin, which the child should take the closing of as its end, and its
// stdout; at the test's end stdin is closed and the child waited for.
func StartSelf(tb testing.TB, env string) (io.WriteCloser, *bufio.Reader) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	return stdin, bufio.NewReader(stdout)
}
