package zones_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
)

// testKeys is a system keystore in a temporary folder with zone key name at two
// versions.
func testKeys(t *testing.T, name string) (*zones.Keys, *keystore.Keyring) {
	t.Helper()
	ksDir := filepath.Join(t.TempDir(), ".ezfs")
	if _, err := keystore.InitSystem(ksDir, []byte("test")); err != nil {
		t.Fatal(err)
	}
	store, err := keystore.Open(ksDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	mks, _ := store.MainKeys()
	sys, err := keystore.UnlockSystem(mks, []byte("test"))
	if err != nil {
		t.Fatal(err)
	}
	ring := keystore.NewKeyring(store, []keystore.Provider{sys}, nil, time.Hour)
	t.Cleanup(func() { ring.Close() })
	if _, err := store.CreateZoneKey(name, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := store.RollZoneKey(name); err != nil {
		t.Fatal(err)
	}
	return &zones.Keys{Ring: ring}, ring
}

// sealV1 makes a v1 record the way ezfs did before v2, under name@version.
func sealV1(t *testing.T, ring *keystore.Keyring, z *zones.Zone, version uint32, dek []byte) ([]byte, crypto.FileID) {
	t.Helper()
	id, _ := crypto.NewFileID()
	var rec []byte
	err := ring.WithZoneKey(context.Background(), z.Key, version, func(key []byte) error {
		e, err := crypto.SealDEKFormat(crypto.EDEKv1, key, z.ID, z.Key, version, id, dek)
		if err != nil {
			return err
		}
		rec, err = e.MarshalBinary()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec, id
}

// New files get v2 records that fit in an ext4 inode; v1 and v2 records open; a rewrap
// writes v2 with the same file ID and data key; a record opened as another zone's, or
// under another key name, does not open.
func TestKeysFormats(t *testing.T) {
	keys, ring := testKeys(t, "finance")
	ctx := context.Background()
	z := &zones.Zone{ID: [16]byte{7}, Key: "finance"}

	dek, rec, id, err := keys.NewFileKey(ctx, z)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec) > 60 || rec[0] != crypto.EDEKv2 {
		t.Fatalf("new record: %d bytes, format byte %#x; want v2, at most 60", len(rec), rec[0])
	}
	got, e, err := keys.OpenFileKey(ctx, z, rec)
	if err != nil || !bytes.Equal(got, dek) || e.Format != crypto.EDEKv2 || e.FileID != id || e.KeyVersion != 2 {
		t.Fatalf("open v2: %v %+v", err, e)
	}

	v1, v1id := sealV1(t, ring, z, 1, dek)
	got, e, err = keys.OpenFileKey(ctx, z, v1)
	if err != nil || !bytes.Equal(got, dek) || e.Format != crypto.EDEKv1 || e.FileID != v1id {
		t.Fatalf("open v1: %v %+v", err, e)
	}
	for _, old := range [][]byte{v1, rec} {
		for _, target := range []uint32{1, 2} {
			out, err := keys.Rewrap(ctx, z, old, target)
			if err != nil {
				t.Fatal(err)
			}
			p, err := crypto.ParseEDEK(out)
			if err != nil || p.Format != crypto.EDEKv2 || p.KeyVersion != target || len(out) > 60 {
				t.Fatalf("rewrap to %d: %v %+v (%d bytes)", target, err, p, len(out))
			}
			o, _ := crypto.ParseEDEK(old)
			got, _, err := keys.OpenFileKey(ctx, z, out)
			if err != nil || !bytes.Equal(got, dek) || p.FileID != o.FileID {
				t.Fatalf("rewrapped record: %v, file ID %x, was %x", err, p.FileID, o.FileID)
			}
		}
	}

	for what, other := range map[string]*zones.Zone{
		"another zone":     {ID: [16]byte{8}, Key: "finance"},
		"another key name": {ID: z.ID, Key: "payroll"},
	} {
		if what == "another key name" {
			if _, err := ring.Store().CreateZoneKey("payroll", ""); err != nil {
				t.Fatal(err)
			}
			if _, err := ring.Store().RollZoneKey("payroll"); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := keys.OpenFileKey(ctx, other, rec); !errors.Is(err, keystore.ErrInvalidCiphertext) {
			t.Errorf("v2 record opened as %s's: %v, want ErrInvalidCiphertext", what, err)
		}
	}
	if _, _, err := keys.OpenFileKey(ctx, &zones.Zone{ID: [16]byte{8}, Key: "finance"}, v1); !errors.Is(err, keystore.ErrInvalidCiphertext) {
		t.Errorf("v1 record opened as another zone's: %v", err)
	}
	if _, _, err := keys.OpenFileKey(ctx, z, []byte{3, 1}); !errors.Is(err, keystore.ErrInvalidCiphertext) {
		t.Errorf("record of format 3: %v", err)
	}
}
