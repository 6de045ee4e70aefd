package zones

import (
	"errors"
	"fmt"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/crypto"
	"golang.org/x/sys/unix"
)

// The two ezfs attributes of backing files are read and written here and nowhere else.

// ErrNoEDEK reports a regular file inside a zone without an EDEK record.
var ErrNoEDEK = errors.New("file in a zone has no EDEK (" + XattrEDEK + ")")

// maxRecord bounds the attribute values read; both formats are far shorter.
const maxRecord = 512

// ReadEDEK returns the EDEK record of the file open as fd.
func ReadEDEK(fd int) ([]byte, error) {
	buf := make([]byte, maxRecord)
	n, err := backing.Getxattr(fd, XattrEDEK, buf)
	if errors.Is(err, unix.ENODATA) {
		return nil, ErrNoEDEK
	}
	if err != nil {
		return nil, fmt.Errorf("read EDEK: %w", err)
	}
	return buf[:n], nil
}

// ReadParsedEDEK returns the EDEK record of the file open as fd, parsed (its key
// version and file ID; nothing is unwrapped).
func ReadParsedEDEK(fd int) (*crypto.EDEK, error) {
	rec, err := ReadEDEK(fd)
	if err != nil {
		return nil, err
	}
	return crypto.ParseEDEK(rec)
}

// WriteEDEK stores rec as the EDEK record of the file open as fd: a new file's
// (replace false: the call fails if one is there) or a rewrap's (replace true: it
// fails if none is).
func WriteEDEK(fd int, rec []byte, replace bool) error {
	flags := unix.XATTR_CREATE
	if replace {
		flags = unix.XATTR_REPLACE
	}
	return backing.Setxattr(fd, XattrEDEK, rec, flags)
}

// ReadMarker returns the zone marker of the directory open as fd; nil, nil if it has
// none.
func ReadMarker(fd int) (*Zone, error) {
	buf := make([]byte, maxRecord)
	n, err := backing.Getxattr(fd, XattrZone, buf)
	if errors.Is(err, unix.ENODATA) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read zone marker: %w", err)
	}
	return ParseMarker(buf[:n])
}

// WriteMarker marks the directory open as fd as the root of zone z.
func WriteMarker(fd int, z *Zone) error {
	return backing.Setxattr(fd, XattrZone, z.Marker(), 0)
}

// RemoveMarker takes the zone marker off the directory open as fd.
func RemoveMarker(fd int) error { return backing.Removexattr(fd, XattrZone) }
