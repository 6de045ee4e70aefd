package zones_test

import (
	"log"
	"testing"
)

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(p))
	return len(p), nil
}

func testLogger(tb testing.TB) *log.Logger { return log.New(testWriter{tb}, "", 0) }
