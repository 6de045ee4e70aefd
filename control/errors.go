package control

import (
	"errors"
	"fmt"
)

// Code classifies a failure. The daemon answers every error with one (Response.Code),
// the CLI exits with the code's number (ExitCode) and puts the code in the --json
// output of a failed command: together they are an ABI, documented in the README and
// in `ezfs --help`. Codes are only ever added, never renumbered.
type Code string

// The codes and their exit numbers (gocryptfs's internal/exitcodes is the model).
const (
	CodeOK          Code = "ok"          // 0
	CodeInternal    Code = "internal"    // 1: anything not classified below
	CodeUsage       Code = "usage"       // 2: bad flag, argument, option or unknown command
	CodeNotFound    Code = "not_found"   // 3: no such key, zone, mount, keystore, file
	CodePermission  Code = "permission"  // 4: wrong passphrase or PIN, credential refused, not root
	CodeUnavailable Code = "unavailable" // 5: key provider or daemon does not answer
	CodeBusy        Code = "busy"        // 6: in use, already exists, a job already running, changed meanwhile
	CodeCorrupt     Code = "corrupt"     // 7: data or a record fails authentication or does not parse
)

var exitCodes = map[Code]int{
	CodeOK: 0, CodeInternal: 1, CodeUsage: 2, CodeNotFound: 3, CodePermission: 4,
	CodeUnavailable: 5, CodeBusy: 6, CodeCorrupt: 7,
}

// Codes lists the codes in exit-number order.
func Codes() []Code {
	return []Code{CodeOK, CodeInternal, CodeUsage, CodeNotFound, CodePermission, CodeUnavailable, CodeBusy, CodeCorrupt}
}

// ExitCode is the process exit status for c; an unknown code (from a newer daemon) is
// internal.
func (c Code) ExitCode() int {
	if n, ok := exitCodes[c]; ok {
		return n
	}
	return 1
}

// Error is a classified error: a code and a one-line message. Errors the daemon answers
// arrive as *Error; the CLI makes its own with Errorf.
type Error struct {
	Code    Code
	Msg     string
	wrapped error
}

func (e *Error) Error() string { return e.Msg }

// Unwrap lets errors.Is see the sentinel an *Error was made from (ErrNoDaemon).
func (e *Error) Unwrap() error { return e.wrapped }

// Errorf is a classified error with a formatted message.
func Errorf(code Code, format string, a ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, a...)}
}

// CodeOf is the code carried by err (an *Error in its chain), or "" when it has none.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
