// Package crypto owns every cryptographic format of ezfs: the content format of a file
// inside a zone (header, 4 KiB AES-256-GCM blocks, size arithmetic), the EDEK record that
// carries a file's data key sealed under a zone key version, the binding of a zone key
// version wrapped under a main key (RSA-OAEP), the passphrase sealing of a local private
// key (Argon2id + AES-GCM), and zeroing of key material.
//
// Nothing here knows about files, xattrs or providers: callers hand in bytes and keys.
package crypto
