package control

import "time"

// Zone key lifecycle operations (keystore/lifecycle.go has the states).
const (
	OpKeyDisable = "key.disable"
	OpKeyEnable  = "key.enable"
	OpKeyDelete  = "key.delete"
	OpKeyRecover = "key.recover"
	OpKeyPurge   = "key.purge"
	OpKeyRetire  = "key.retire"
)

// KeyStateArgs name a zone key (and, for retire, a version), with delete's retention
// window (0: the default, 7 days) and purge's --force.
type KeyStateArgs struct {
	Name      string        `json:"name"`
	Version   uint32        `json:"version,omitempty"`
	Retention time.Duration `json:"retention,omitempty"`
	Force     bool          `json:"force,omitempty"`
}

// KeyLifecycle is the lifecycle part of KeyInfo: the key's state and, once deleted,
// when and until when it can be recovered; once purged, when.
type KeyLifecycle struct {
	State      string     `json:"state"`
	Deleted    *time.Time `json:"deleted,omitempty"`
	PurgeAfter *time.Time `json:"purge_after,omitempty"`
	Purged     *time.Time `json:"purged,omitempty"`
}
