package testservers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestEventually_ReturnsOnceCondHolds(t *testing.T) {
	calls := 0
	err := Eventually(t, 5*time.Second, time.Millisecond, "the third call", func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("want nil after 3 calls, got %v after %d", err, calls)
	}
}

// fatalRecorder is a testing.TB whose Fatal only records its message.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper()           {}
func (f *fatalRecorder) Fatal(args ...any) { f.msg = fmt.Sprint(args...) }

func TestEventually_Timeout_ReportsWhatAndTheLastFailure_CondRunsAtTheDeadline(t *testing.T) {
	calls := 0
	cond := func() error { calls++; return fmt.Errorf("call %d failed", calls) }

	// An interval longer than the timeout: cond runs first and once more
	// at the deadline, and that last failure is the one reported.
	err := Eventually(nil, 30*time.Millisecond, time.Hour, "the impossible", cond)
	if want := "waited 30ms for the impossible; last: call 2 failed"; err == nil || err.Error() != want {
		t.Fatalf("want %q, got %v", want, err)
	}

	calls = 0
	f := &fatalRecorder{TB: t}
	err = Eventually(f, 30*time.Millisecond, time.Hour, "the impossible", cond)
	if !strings.Contains(f.msg, "last: call 2 failed") || err == nil || err.Error() != f.msg {
		t.Fatalf("want t.Fatal with the last failure, got %q (returned %v)", f.msg, err)
	}
}
