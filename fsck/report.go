package fsck

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Kind names a problem; the names are part of the --json output.
type Kind string

// The problems fsck reports. Only torn-tail and marker-missing are ever repaired.
const (
	// The zone's root directory is gone, is not a directory, or is another directory
	// than the keystore recorded (its files are not checked).
	KindZoneRoot Kind = "zone-root"
	// The zone root has no marker (repairable from the keystore).
	KindMarkerMissing Kind = "marker-missing"
	// The zone root's marker is unreadable or names another zone or key.
	KindMarkerMismatch Kind = "marker-mismatch"
	// A zone uses a key the keystore does not have, or a zone key version does not
	// unwrap to a valid key (its files are counted but not checked).
	KindZoneKey Kind = "zone-key"
	// A regular file in a zone without an EDEK: stored in the clear, put on the
	// backing disk directly.
	KindPlaintext Kind = "plaintext"
	// An empty regular file in a zone without an EDEK: a create cut short by a crash
	// between the file and its EDEK. It holds no data, but the mount answers EIO on
	// its open: remove it. Not repaired (fsck writes no EDEK and deletes nothing).
	KindInterruptedCreate Kind = "interrupted-create"
	// An EDEK that does not parse, names a key version the keystore does not have
	// or may never unwrap (retired, or its key purged), or does not open (tampered,
	// or from another file or zone).
	KindBadEDEK Kind = "bad-edek"
	// The content header is not an ezfs header, or names another file than the EDEK.
	KindBadHeader Kind = "bad-header"
	// The backing file ends past its last intact block: a write cut short by a crash
	// (repairable: cut to the last intact block).
	KindTornTail Kind = "torn-tail"
	// Blocks that do not authenticate (all of them with --full, the last one always).
	KindBadBlock Kind = "bad-block"
	// A file that cannot be read (an I/O error).
	KindUnreadable Kind = "unreadable"
	// A zone key no registered zone uses.
	KindUnusedKey Kind = "unused-key"
	// An active version of a zone key, not its newest, that no file references: it
	// can be retired.
	KindUnusedVersion Kind = "unused-version"
)

// Problem is one thing fsck found wrong.
type Problem struct {
	Kind Kind `json:"kind"`
	// Path is relative to the backing directory ("" for the backing dir itself and
	// for key problems).
	Path string `json:"path"`
	// Zone is the root of the zone holding Path, relative to the backing directory.
	Zone string `json:"zone,omitempty"`
	// Key is name@version (or name) for key problems.
	Key    string `json:"key,omitempty"`
	Detail string `json:"detail"`
	// From and To are the plaintext byte range [From, To) of bad blocks.
	From int64 `json:"from,omitempty"`
	To   int64 `json:"to,omitempty"`
	// Repaired says --repair fixed it.
	Repaired bool `json:"repaired,omitempty"`
}

// String is the problem as one line of text; the path, key and detail as Printable
// gives them, so that a name on the disk cannot forge report lines.
func (p Problem) String() string {
	what := Printable("/" + p.Path)
	if p.Path == "" && p.Key != "" {
		what = "key " + Printable(p.Key)
	}
	s := fmt.Sprintf("%s: %s: %s", p.Kind, what, Printable(p.Detail))
	if p.Repaired {
		s += " [repaired]"
	}
	return s
}

// ZoneReport counts what fsck found in one zone.
type ZoneReport struct {
	Path string `json:"path"`
	ID   string `json:"id"`
	Key  string `json:"key"`
	// Checked is false when the zone's files could not be walked (see its problems).
	Checked bool `json:"checked"`
	// Files counts regular files once per inode; Links the further names of
	// hard-linked ones; Empty the empty files among Files; Others the symlinks,
	// FIFOs, sockets and device nodes (listed, never opened).
	Files  int64 `json:"files"`
	Links  int64 `json:"links"`
	Empty  int64 `json:"empty"`
	Others int64 `json:"others"`
	// NotChecked counts the files among Files whose key is disabled or deleted: fsck
	// does not unwrap it, so their EDEKs and contents are not checked.
	NotChecked int64 `json:"not_checked"`
	// Bytes is the plaintext size of the files' intact contents.
	Bytes int64 `json:"bytes"`
	// Versions counts files per key version, as "name@N" (a file in EDEK format v1
	// names its key itself).
	Versions map[string]int64 `json:"versions"`
}

// VersionReport is one zone key version and how many files reference it.
type VersionReport struct {
	Version uint32 `json:"version"`
	State   string `json:"state"`
	Latest  bool   `json:"latest"`
	MainKey string `json:"main_key"`
	Files   int64  `json:"files"`
}

// KeyReport is one zone key with its versions and the zones using it.
type KeyReport struct {
	Name string `json:"name"`
	// State is the key's lifecycle state: active, disabled, deleted or purged.
	State    string          `json:"state"`
	Zones    []string        `json:"zones"`
	Versions []VersionReport `json:"versions"`
}

// Report is the outcome of a run.
type Report struct {
	Backing  string       `json:"backing"`
	Keystore string       `json:"keystore"`
	Full     bool         `json:"full"`
	Repair   bool         `json:"repair"`
	Zones    []ZoneReport `json:"zones"`
	Keys     []KeyReport  `json:"keys"`
	// Totals over the zones.
	Files  int64 `json:"files"`
	Links  int64 `json:"links"`
	Others int64 `json:"others"`
	Bytes  int64 `json:"bytes"`
	// NotChecked counts the files whose key is disabled or deleted (ZoneReport).
	NotChecked int64 `json:"not_checked"`
	// Unwraps counts the zone key versions unwrapped: one per version in use.
	Unwraps  int       `json:"unwraps"`
	Problems []Problem `json:"problems"`
	Repaired int       `json:"repaired"`
	Seconds  float64   `json:"seconds"`
	Rate     float64   `json:"files_per_second"`
}

// Clean reports whether nothing is left to fix: no problem, or every one repaired.
func (r *Report) Clean() bool {
	return r.Repaired == len(r.Problems)
}

func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Path != ps[j].Path {
			return ps[i].Path < ps[j].Path
		}
		if ps[i].Key != ps[j].Key {
			return ps[i].Key < ps[j].Key
		}
		if ps[i].From != ps[j].From {
			return ps[i].From < ps[j].From
		}
		return ps[i].Kind < ps[j].Kind
	})
}

// Printable is s for a text report: as it is when every rune of it is printable (as
// strconv.IsPrint says: no control characters, newlines or escape sequences, no
// invalid UTF-8) and it does not start with a double quote, else quoted with
// strconv.Quote. Names come from the disk, where anyone who can write a zone can
// choose them.
func Printable(s string) string {
	if strings.HasPrefix(s, `"`) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
