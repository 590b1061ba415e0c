package registry_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/registry"
)

// newRegistry is a registry on a fresh bbolt store, closed with t.
func newRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	st, err := boltstore.New(boltstore.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	reg, err := registry.New(registry.Config{Store: st, Logger: chantest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// TestErrorsPrefixedOnce: the registry's errors say what failed and keep
// the sentinel's own "hub: " once, so the admin API shows
// "enrol dev-…: hub: already exists: …" and not the prefix twice.
func TestErrorsPrefixedOnce(t *testing.T) {
	ctx := t.Context()
	reg := newRegistry(t)
	q := registry.EnrolRequest{Key: hub.PubKeyOf(chantest.MustKey(t).PubKey()), Roles: []hub.Role{hub.RolePayer}}
	d, err := reg.Enrol(ctx, q, "op")
	if err != nil {
		t.Fatal(err)
	}
	_, again := reg.Enrol(ctx, q, "op")
	_, unknown := reg.Revoke(ctx, "dev-unknown", "op", "test")
	_, frozen := reg.Freeze(ctx, "dev-unknown", "op", "test")
	if _, err := reg.Revoke(ctx, d.ID, "op", "test"); err != nil {
		t.Fatal(err)
	}
	_, revoked := reg.Rotate(ctx, d.ID, hub.PubKeyOf(chantest.MustKey(t).PubKey()), nil, "op")
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"EnrolTwice", again, hub.ErrAlreadyExists},
		{"RevokeUnknown", unknown, hub.ErrNotFound},
		{"FreezeUnknown", frozen, hub.ErrNotFound},
		{"RotateRevoked", revoked, hub.ErrRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, tc.want) {
				t.Fatalf("error = %v, want %v", tc.err, tc.want)
			}
			if n := strings.Count(tc.err.Error(), "hub: "); n != 1 {
				t.Fatalf("error %q names the hub %d times", tc.err, n)
			}
		})
	}
}
