package fs

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// meteredFS times every FUSE request of the common operations for Metrics.Request;
// the others pass through unmeasured (Writev counts as write). Generated from
// go-fuse's RawFileSystem.
type meteredFS struct {
	fuse.RawFileSystem
	m Metrics
}

func (k *meteredFS) done(op string, start time.Time, st fuse.Status) {
	k.m.Request(op, time.Since(start), st.Ok())
}

func (k *meteredFS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) (status fuse.Status) {
	defer func(t time.Time) { k.done("lookup", t, status) }(time.Now())
	return k.RawFileSystem.Lookup(cancel, header, name, out)
}

func (k *meteredFS) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) (code fuse.Status) {
	defer func(t time.Time) { k.done("getattr", t, code) }(time.Now())
	return k.RawFileSystem.GetAttr(cancel, input, out)
}

func (k *meteredFS) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) (code fuse.Status) {
	defer func(t time.Time) { k.done("setattr", t, code) }(time.Now())
	return k.RawFileSystem.SetAttr(cancel, input, out)
}

func (k *meteredFS) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) (code fuse.Status) {
	defer func(t time.Time) { k.done("mknod", t, code) }(time.Now())
	return k.RawFileSystem.Mknod(cancel, input, name, out)
}

func (k *meteredFS) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) (code fuse.Status) {
	defer func(t time.Time) { k.done("mkdir", t, code) }(time.Now())
	return k.RawFileSystem.Mkdir(cancel, input, name, out)
}

func (k *meteredFS) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) (code fuse.Status) {
	defer func(t time.Time) { k.done("unlink", t, code) }(time.Now())
	return k.RawFileSystem.Unlink(cancel, header, name)
}

func (k *meteredFS) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) (code fuse.Status) {
	defer func(t time.Time) { k.done("rmdir", t, code) }(time.Now())
	return k.RawFileSystem.Rmdir(cancel, header, name)
}

func (k *meteredFS) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) (code fuse.Status) {
	defer func(t time.Time) { k.done("rename", t, code) }(time.Now())
	return k.RawFileSystem.Rename(cancel, input, oldName, newName)
}

func (k *meteredFS) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) (code fuse.Status) {
	defer func(t time.Time) { k.done("link", t, code) }(time.Now())
	return k.RawFileSystem.Link(cancel, input, filename, out)
}

func (k *meteredFS) Symlink(cancel <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) (code fuse.Status) {
	defer func(t time.Time) { k.done("symlink", t, code) }(time.Now())
	return k.RawFileSystem.Symlink(cancel, header, pointedTo, linkName, out)
}

func (k *meteredFS) Readlink(cancel <-chan struct{}, header *fuse.InHeader) (out []byte, code fuse.Status) {
	defer func(t time.Time) { k.done("readlink", t, code) }(time.Now())
	return k.RawFileSystem.Readlink(cancel, header)
}

func (k *meteredFS) Access(cancel <-chan struct{}, input *fuse.AccessIn) (code fuse.Status) {
	defer func(t time.Time) { k.done("access", t, code) }(time.Now())
	return k.RawFileSystem.Access(cancel, input)
}

func (k *meteredFS) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (sz uint32, code fuse.Status) {
	defer func(t time.Time) { k.done("getxattr", t, code) }(time.Now())
	return k.RawFileSystem.GetXAttr(cancel, header, attr, dest)
}

func (k *meteredFS) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (n uint32, code fuse.Status) {
	defer func(t time.Time) { k.done("listxattr", t, code) }(time.Now())
	return k.RawFileSystem.ListXAttr(cancel, header, dest)
}

func (k *meteredFS) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) (code fuse.Status) {
	defer func(t time.Time) { k.done("setxattr", t, code) }(time.Now())
	return k.RawFileSystem.SetXAttr(cancel, input, attr, data)
}

func (k *meteredFS) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) (code fuse.Status) {
	defer func(t time.Time) { k.done("removexattr", t, code) }(time.Now())
	return k.RawFileSystem.RemoveXAttr(cancel, header, attr)
}

func (k *meteredFS) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) (code fuse.Status) {
	defer func(t time.Time) { k.done("create", t, code) }(time.Now())
	return k.RawFileSystem.Create(cancel, input, name, out)
}

func (k *meteredFS) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) (status fuse.Status) {
	defer func(t time.Time) { k.done("open", t, status) }(time.Now())
	return k.RawFileSystem.Open(cancel, input, out)
}

func (k *meteredFS) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (r fuse.ReadResult, code fuse.Status) {
	defer func(t time.Time) { k.done("read", t, code) }(time.Now())
	return k.RawFileSystem.Read(cancel, input, buf)
}

func (k *meteredFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) (code fuse.Status) {
	defer func(t time.Time) { k.done("lseek", t, code) }(time.Now())
	return k.RawFileSystem.Lseek(cancel, in, out)
}

func (k *meteredFS) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (written uint32, code fuse.Status) {
	defer func(t time.Time) { k.done("write", t, code) }(time.Now())
	return k.RawFileSystem.Write(cancel, input, data)
}

func (k *meteredFS) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (written uint32, code fuse.Status) {
	defer func(t time.Time) { k.done("write", t, code) }(time.Now())
	return k.RawFileSystem.Writev(cancel, input, data)
}

func (k *meteredFS) CopyFileRange(cancel <-chan struct{}, input *fuse.CopyFileRangeIn) (written uint32, code fuse.Status) {
	defer func(t time.Time) { k.done("copy_file_range", t, code) }(time.Now())
	return k.RawFileSystem.CopyFileRange(cancel, input)
}

func (k *meteredFS) Flush(cancel <-chan struct{}, input *fuse.FlushIn) (code fuse.Status) {
	defer func(t time.Time) { k.done("flush", t, code) }(time.Now())
	return k.RawFileSystem.Flush(cancel, input)
}

func (k *meteredFS) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) (code fuse.Status) {
	defer func(t time.Time) { k.done("fsync", t, code) }(time.Now())
	return k.RawFileSystem.Fsync(cancel, input)
}

func (k *meteredFS) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) (code fuse.Status) {
	defer func(t time.Time) { k.done("fallocate", t, code) }(time.Now())
	return k.RawFileSystem.Fallocate(cancel, input)
}

func (k *meteredFS) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) (status fuse.Status) {
	defer func(t time.Time) { k.done("opendir", t, status) }(time.Now())
	return k.RawFileSystem.OpenDir(cancel, input, out)
}

func (k *meteredFS) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) (code fuse.Status) {
	defer func(t time.Time) { k.done("readdir", t, code) }(time.Now())
	return k.RawFileSystem.ReadDir(cancel, input, out)
}

func (k *meteredFS) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) (code fuse.Status) {
	defer func(t time.Time) { k.done("readdirplus", t, code) }(time.Now())
	return k.RawFileSystem.ReadDirPlus(cancel, input, out)
}

func (k *meteredFS) StatFs(cancel <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) (code fuse.Status) {
	defer func(t time.Time) { k.done("statfs", t, code) }(time.Now())
	return k.RawFileSystem.StatFs(cancel, input, out)
}
