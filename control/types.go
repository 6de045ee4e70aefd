package control

import "time"

// Operations of the control socket.
const (
	OpStatus      = "status"
	OpKeyCreate   = "key.create"
	OpKeyRoll     = "key.roll"
	OpKeyList     = "key.list"
	OpKeyDescribe = "key.describe"
	OpZoneCreate  = "zone.create"
	OpZoneList    = "zone.list"
	OpFileInfo    = "file.info"
	OpUnmount     = "unmount"
)

// NameArgs name a zone key.
type NameArgs struct {
	Name string `json:"name"`
}

// PathArgs name a path relative to the mountpoint.
type PathArgs struct {
	Path string `json:"path"`
}

// ZoneCreateArgs create a zone.
type ZoneCreateArgs struct {
	Path string `json:"path"`
	Key  string `json:"key"`
}

// KeyVersion describes one zone key version.
type KeyVersion struct {
	Version      uint32    `json:"version"`
	Created      time.Time `json:"created"`
	MainVersion  uint32    `json:"main_key_version"`
	MainProvider string    `json:"main_key_provider"`
	State        string    `json:"state"`
	Current      bool      `json:"current"`
}

// KeyInfo describes a zone key.
type KeyInfo struct {
	Name     string       `json:"name"`
	Created  time.Time    `json:"created"`
	Current  uint32       `json:"current_version"`
	Zones    []string     `json:"zones"`
	Versions []KeyVersion `json:"versions"`
}

// ZoneInfo describes a zone.
type ZoneInfo struct {
	ID      string    `json:"id"`
	Path    string    `json:"path"`
	Key     string    `json:"key"`
	Created time.Time `json:"created"`
}

// FileInfo describes a path in a mount.
type FileInfo struct {
	Path       string `json:"path"`
	Encrypted  bool   `json:"encrypted"`
	Zone       string `json:"zone,omitempty"`
	ZoneID     string `json:"zone_id,omitempty"`
	Key        string `json:"key,omitempty"`
	KeyVersion uint32 `json:"key_version,omitempty"`
	FileID     string `json:"file_id,omitempty"`
	Note       string `json:"note,omitempty"`
}

// Status describes a running daemon.
type Status struct {
	PID         int       `json:"pid"`
	Mountpoint  string    `json:"mountpoint"`
	Backing     string    `json:"backing"`
	Keystore    string    `json:"keystore"`
	Started     time.Time `json:"started"`
	MainVersion uint32    `json:"main_key_version"`
	Provider    string    `json:"provider"`
	ProviderOK  bool      `json:"provider_ok"`
	ProviderErr string    `json:"provider_error,omitempty"`
	Zones       int       `json:"zones"`
	CachedKeys  int       `json:"cached_zone_keys"`
}
