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
	MainKey      string    `json:"main_key"`
	MainVersion  uint32    `json:"main_key_version"`
	MainProvider string    `json:"main_key_provider"`
	State        string    `json:"state"`
	Current      bool      `json:"current"`
	// Files referencing this version, from the last finished reencryption job of
	// each zone using the key; nil when no job has counted.
	Files *int64 `json:"files,omitempty"`
}

// KeyInfo describes a zone key.
type KeyInfo struct {
	Name string `json:"name"`
	// MainKey wraps the key's new versions.
	MainKey  string       `json:"main_key"`
	Created  time.Time    `json:"created"`
	Current  uint32       `json:"current_version"`
	Zones    []string     `json:"zones"`
	Versions []KeyVersion `json:"versions"`
	// CountedAt is when the file counts were taken (the newest job counted).
	CountedAt *time.Time `json:"counted_at,omitempty"`
	KeyLifecycle
	// Policy is the key's rotation schedule (nil: none), NextRotation when the daemon
	// rolls it next, RotationError why its last automatic roll failed (retried later).
	Policy        *KeyPolicy `json:"policy,omitempty"`
	NextRotation  *time.Time `json:"next_rotation,omitempty"`
	RotationError string     `json:"rotation_error,omitempty"`
}

// ZoneInfo describes a zone.
type ZoneInfo struct {
	ID      string    `json:"id"`
	Path    string    `json:"path"`
	Key     string    `json:"key"`
	Created time.Time `json:"created"`
	// Damaged says why the zone is not served (its files answer EIO): its root's
	// marker is missing or names another zone, or the root is not where the keystore
	// has it. Empty for a healthy zone.
	Damaged string `json:"damaged,omitempty"`
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
	// EDEKFormat is the format version of the file's EDEK record (1 or 2).
	EDEKFormat int    `json:"edek_format,omitempty"`
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
	// Options are the mount's -o words, as given (sharedstorage among them).
	Options []string `json:"options,omitempty"`
	// Providers is the health of every provider the mount uses.
	Providers []ProviderStatus `json:"providers"`
	// DamagedZones are the registered zones that are not served (ZoneInfo.Damaged).
	DamagedZones []ZoneInfo `json:"damaged_zones,omitempty"`
}

// Reencrypt operations.
const (
	OpReencryptStart  = "reencrypt.start"
	OpReencryptCancel = "reencrypt.cancel"
	OpReencryptStatus = "reencrypt.status"
)

// ReencryptArgs name a zone by its path relative to the mountpoint ("" for all, in
// status), with the rate limit of a start (files per second, 0 for none).
type ReencryptArgs struct {
	Path string  `json:"path"`
	All  bool    `json:"all,omitempty"`
	Rate float64 `json:"rate,omitempty"`
}

// FailedFile is a file a job could not re-encrypt.
type FailedFile struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// JobStatus is a reencryption job as `reencrypt status` shows it.
type JobStatus struct {
	Zone           string       `json:"zone"`
	ZoneID         string       `json:"zone_id"`
	Key            string       `json:"key"`
	State          string       `json:"state"`
	Target         uint32       `json:"target_version"`
	Submitted      time.Time    `json:"submission_time"`
	Canceled       bool         `json:"canceled"`
	Completed      *time.Time   `json:"completion_time,omitempty"`
	Reencrypted    int64        `json:"files_reencrypted"`
	AlreadyCurrent int64        `json:"files_already_current"`
	UpgradedV1     int64        `json:"upgraded_v1"` // of Reencrypted, records that were EDEK format v1
	Failures       int64        `json:"failures"`
	Files          int64        `json:"files"`
	ExtraLinks     int64        `json:"extra_hard_links"`
	Total          int64        `json:"total_estimate"`
	Checkpoint     string       `json:"last_file_checkpointed"`
	Pass           int          `json:"pass"`
	Percent        float64      `json:"percent_done"`
	FilesPerSecond float64      `json:"files_per_second"`
	ETASeconds     float64      `json:"eta_seconds"`
	RateLimit      float64      `json:"rate_limit,omitempty"`
	Reason         string       `json:"reason,omitempty"`
	Owner          string       `json:"owner,omitempty"` // HOST:PID running the job or that ended it; "" unfinished without one
	FailedFiles    []FailedFile `json:"failed_files,omitempty"`
}

// Main key operations.
const (
	OpKMSShow   = "kms.show"
	OpKMSRotate = "kms.rotate"
	OpKMSSet    = "kms.set"
	OpKMSRewrap = "kms.rewrap"
	OpKMSRetire = "kms.retire"
	OpKMSCreate = "kms.create"
	OpKMSCheck  = "kms.check"

	OpKeySetMain = "key.set-main"
)

// KeyCreateArgs create a zone key under a main key ("" for the default).
type KeyCreateArgs struct {
	Name    string `json:"name"`
	MainKey string `json:"main_key,omitempty"`
}

// KMSArgs carry a provider description and the secrets it needs. They travel only over
// the control socket (root only), never on a command line.
type KMSArgs struct {
	// Name is the main key ("" for the default).
	Name         string `json:"name,omitempty"`
	Provider     string `json:"provider,omitempty"`
	PKCS11Module string `json:"pkcs11_module,omitempty"`
	PKCS11Token  string `json:"pkcs11_token,omitempty"`
	PKCS11Key    string `json:"pkcs11_key,omitempty"`
	VaultKey     string `json:"vault_key,omitempty"`
	VaultMount   string `json:"vault_transit_mount,omitempty"`
	// The administrator's VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE and VAULT_CACERT.
	VaultAddress   string `json:"vault_addr,omitempty"`
	VaultToken     string `json:"vault_token,omitempty"`
	VaultNamespace string `json:"vault_namespace,omitempty"`
	VaultCACert    string `json:"vault_cacert,omitempty"`
	// VaultAuth is "token" or "approle" (with VaultRoleID and VaultAuthMount; the secret
	// ID's source is CredentialFile or CredentialEnv).
	VaultAuth      string `json:"vault_auth,omitempty"`
	VaultRoleID    string `json:"vault_role_id,omitempty"`
	VaultAuthMount string `json:"vault_auth_mount,omitempty"`
	Passphrase     []byte `json:"passphrase,omitempty"`
	PIN            []byte `json:"pin,omitempty"`
	Version        uint32 `json:"version,omitempty"`
	// CredentialFile or CredentialEnv is where the new version's secret comes from,
	// recorded with it (the secret itself travels in PIN, VaultToken or Passphrase
	// when it comes from the environment).
	CredentialFile string `json:"credential_file,omitempty"`
	CredentialEnv  string `json:"credential_env,omitempty"`
	// CredentialSystemd is a systemd credential's name (the daemon reads it).
	CredentialSystemd string `json:"credential_systemd,omitempty"`
}

// MainKeyInfo describes one main key version.
type MainKeyInfo struct {
	Name        string    `json:"name"`
	Version     uint32    `json:"version"`
	Provider    string    `json:"provider"`
	KeyRef      string    `json:"key_ref"`
	Algorithm   string    `json:"algorithm"`
	OAEPHash    string    `json:"oaep_hash"`
	Fingerprint string    `json:"fingerprint"`
	State       string    `json:"state"`
	Current     bool      `json:"current"`
	Created     time.Time `json:"created"`
	// ZoneKeyVersions counts the zone key versions it wraps.
	ZoneKeyVersions int `json:"zone_key_versions"`
	// ZoneKeys lists the zone key versions it wraps, as NAME@N.
	ZoneKeys []string `json:"zone_keys"`
	// Settings locate the provider instance (module, token, key; address, namespace,
	// mount, key, CA file, auth); Credential says where its secret comes from.
	Settings   map[string]string `json:"settings,omitempty"`
	Credential string            `json:"credential"`
	// Origin is "detected" for a version enrolled because the provider made it.
	Origin string `json:"origin,omitempty"`
	// Health is what its provider last answered (nil: not asked since the mount).
	Health *ProviderStatus `json:"health,omitempty"`
}

// ProviderStatus is the health of one provider.
type ProviderStatus struct {
	Kind  string `json:"kind"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// The main key version it serves, and since when it is in this health.
	MainKey     string    `json:"main_key,omitempty"`
	MainVersion uint32    `json:"main_key_version,omitempty"`
	Since       time.Time `json:"since,omitempty"`
}

// Rotation policies and keystore backups.
const (
	OpKeyPolicy      = "key.policy"
	OpKeystoreBackup = "keystore.backup"
)

// KeyPolicyArgs set (RotateEvery > 0) or clear (0) a zone key's rotation policy.
type KeyPolicyArgs struct {
	Name        string        `json:"name"`
	RotateEvery time.Duration `json:"rotate_every"`
	Reencrypt   bool          `json:"reencrypt,omitempty"`
}

// KeyPolicy is a zone key's rotation schedule.
type KeyPolicy struct {
	RotateEvery string    `json:"rotate_every"` // a Go duration: "720h0m0s"
	Seconds     float64   `json:"rotate_every_seconds"`
	Reencrypt   bool      `json:"reencrypt"`
	Set         time.Time `json:"set"`
}

// BackupArgs ask for a copy of the keystore at Path (absolute, outside the mount).
type BackupArgs struct {
	Path  string `json:"path"`
	Force bool   `json:"force,omitempty"`
}

// BackupResult describes a keystore backup made.
type BackupResult struct {
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
}
