package fs

import "context"

// asCaller runs fn, which creates a backing object, as the request's caller.
func (f *FS) asCaller(ctx context.Context, fn func() error) error { return fn() }
