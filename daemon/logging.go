package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// NewLogger is the daemon's logger: format "text" (or "") is today's "ezfs: " lines,
// "json" one JSON object per line (log/slog) for journald and log shippers. Every
// package logs through a *log.Logger; in JSON a line becomes a record with the fields
// docs/DESIGN.md names: time, level, msg, mountpoint, pid, and where the message says
// so errno and path (an "EIO on PATH: ..." line) and level WARN for "WARNING: ...".
//
// In JSON the second result takes the data path's errors as records of their own, with
// errno, path, zone, key and key_version (fs.Options.Events); nil for text.
func NewLogger(format string, w io.Writer, mountpoint string) (*log.Logger, *slog.Logger, error) {
	switch format {
	case "", "text":
		return log.New(w, "ezfs: ", log.LstdFlags|log.Lmicroseconds), nil, nil
	case "json":
		h := slog.NewJSONHandler(w, nil).WithAttrs([]slog.Attr{slog.String("mountpoint", mountpoint), slog.Int("pid", os.Getpid())})
		sw := &slogWriter{h: h}
		return log.New(sw, "", 0), slog.New(lockedHandler{mu: &sw.mu, h: h}), nil
	}
	return nil, nil, UsageError("--log-format %q: text or json", format)
}

// lockedHandler writes slog records under the slogWriter's mutex, so that records and
// converted lines never interleave on the output.
type lockedHandler struct {
	mu *sync.Mutex
	h  slog.Handler
}

func (l lockedHandler) Enabled(ctx context.Context, lv slog.Level) bool { return l.h.Enabled(ctx, lv) }

func (l lockedHandler) Handle(ctx context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.h.Handle(ctx, r)
}

func (l lockedHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return lockedHandler{mu: l.mu, h: l.h.WithAttrs(a)}
}

func (l lockedHandler) WithGroup(g string) slog.Handler {
	return lockedHandler{mu: l.mu, h: l.h.WithGroup(g)}
}

// slogWriter turns each line a log.Logger writes into a slog record.
type slogWriter struct {
	mu sync.Mutex
	h  slog.Handler
}

func (s *slogWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		msg := string(line)
		level := slog.LevelInfo
		var attrs []slog.Attr
		if rest, ok := strings.CutPrefix(msg, "WARNING: "); ok {
			level, msg = slog.LevelWarn, rest
		}
		if rest, ok := strings.CutPrefix(msg, "EIO on "); ok {
			level = slog.LevelError
			path, _, _ := strings.Cut(rest, ": ")
			attrs = append(attrs, slog.String("errno", "EIO"), slog.String("path", path))
		}
		r := slog.NewRecord(time.Now(), level, msg, 0)
		r.AddAttrs(attrs...)
		if err := s.h.Handle(context.Background(), r); err != nil {
			return 0, fmt.Errorf("log: %w", err)
		}
	}
	return len(p), nil
}
