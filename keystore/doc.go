// Package keystore owns the key hierarchy above file data keys: the keystore (main key
// versions, zone keys and their wrapped versions, zones, jobs) in a bbolt file or under
// an etcd prefix shared by many hosts (backend.go), the main key providers that hold
// private parts, the in-memory cache of unwrapped zone key versions, and the audit log.
// Nothing secret is stored in the clear: zone key versions are RSA-OAEP wrapped, a
// local private key is sealed under Argon2id.
package keystore
