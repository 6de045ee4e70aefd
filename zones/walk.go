package zones

import (
	"context"
	"errors"
	"os"
	"strings"

	"github.com/ezfs/ezfs/backing"
)

// Walk calls emit for every entry below zone root zrel that is not a directory, in
// walk order (depth first, names sorted), with its path relative to the zone root and
// its type as the directory lists it. Nothing is opened but directories, each beneath
// the backing root without following a symlink; a directory removed meanwhile is
// skipped. emit returning false stops the walk. Reencrypt and fsck walk zones so.
func Walk(ctx context.Context, b *backing.Root, zrel string, emit func(rel string, typ os.FileMode) bool) error {
	return walkEntries(ctx, b, zrel, "", "", emit)
}

// errStop unwinds a walk whose emit said stop.
var errStop = errors.New("walk stopped")

// walkKey orders paths as the walk visits them: depth first, names sorted.
func walkKey(p string) string { return strings.ReplaceAll(p, "/", "\x00") }

// walkEntries is Walk from directory rel of the zone, after checkpoint.
func walkEntries(ctx context.Context, b *backing.Root, zrel, rel, checkpoint string, emit func(rel string, typ os.FileMode) bool) error {
	if err := walkDir(ctx, b, zrel, rel, checkpoint, emit); err != errStop {
		return err
	}
	return nil
}

func walkDir(ctx context.Context, b *backing.Root, zrel, rel, checkpoint string, emit func(rel string, typ os.FileMode) bool) error {
	entries, err := b.ReadDir(joinRel(zrel, rel))
	if err != nil {
		if rel != "" && errors.Is(err, os.ErrNotExist) {
			return nil // removed while we walked
		}
		return err
	}
	cpKey := walkKey(checkpoint)
	for _, e := range entries {
		if ctx.Err() != nil {
			return nil
		}
		p := joinRel(rel, e.Name())
		if checkpoint != "" && walkKey(p) <= cpKey && !strings.HasPrefix(checkpoint, p+"/") {
			continue
		}
		if e.IsDir() {
			if err := walkDir(ctx, b, zrel, p, checkpoint, emit); err != nil {
				return err
			}
			continue
		}
		if checkpoint != "" && walkKey(p) <= cpKey {
			continue
		}
		if !emit(p, e.Type()) {
			return errStop
		}
	}
	return nil
}
