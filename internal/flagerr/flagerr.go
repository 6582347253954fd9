// Package flagerr is the one error type for a bad command-line value: it
// names the flag, so the CLI prints one actionable line.
package flagerr

import "fmt"

// Error is a bad value of flag --Flag.
type Error struct {
	Flag string
	Msg  string
}

func (e *Error) Error() string { return "--" + e.Flag + ": " + e.Msg }

// New returns an *Error for flag with a formatted message.
func New(flag, format string, a ...any) error {
	return &Error{Flag: flag, Msg: fmt.Sprintf(format, a...)}
}
