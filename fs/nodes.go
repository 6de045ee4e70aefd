package fs

import gofs "github.com/hanwen/go-fuse/v2/fs"

// Nodes counts the nodes of the tree: the inodes the kernel knows by a name, each
// once (hard links share a node). It walks the whole tree; for diagnostics.
func (f *FS) Nodes() int {
	seen := map[*gofs.Inode]bool{}
	var walk func(in *gofs.Inode)
	walk = func(in *gofs.Inode) {
		if seen[in] {
			return
		}
		seen[in] = true
		for _, c := range in.Children() {
			walk(c)
		}
	}
	walk(f.top.EmbeddedInode())
	return len(seen)
}
