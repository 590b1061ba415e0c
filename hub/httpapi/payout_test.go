package httpapi_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/boltstore"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/registry"
)

func TestSetPayout(t *testing.T) {
	ctx := t.Context()
	store, err := boltstore.New(boltstore.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg, err := registry.New(registry.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Config{
		Registry: reg, Token: token,
		Info: func() httpapi.Info { return httpapi.Info{Network: chaincfg.RegressionNetParams.Name} },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(checkedHandler(t, h))
	t.Cleanup(srv.Close)
	cl := httpapi.NewClient(strings.TrimPrefix(srv.URL, "http://"), token)

	k, _ := btcec.NewPrivateKey()
	d, err := cl.AddDevice(ctx, httpapi.AddDeviceRequest{PubKey: hub.PubKeyOf(k.PubKey()), Roles: []hub.Role{hub.RoleProvider}})
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := btcec.NewPrivateKey()
	addr, err := btcutil.NewAddressTaproot(txscript.ComputeTaprootKeyNoScript(pk.PubKey()).SerializeCompressed()[1:], &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := txscript.PayToAddrScript(addr)
	got, err := cl.SetPayout(ctx, d.ID, addr.EncodeAddress())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Payout, want) {
		t.Fatalf("answered payout %x, want %x", got.Payout, want)
	}
	if s, err := reg.PayoutScript(ctx, d.ID); err != nil || !bytes.Equal(s, want) {
		t.Fatalf("registry payout %x, %v", s, err)
	}
	audit, err := cl.Audit(ctx, 0, 100)
	if err != nil || audit[len(audit)-1].Kind != registry.AuditPayout {
		t.Fatalf("last audit entry %+v, %v", audit[len(audit)-1], err)
	}

	// An address of another network, garbage, or an unknown device.
	main, _ := btcutil.NewAddressTaproot(make([]byte, 32), &chaincfg.MainNetParams)
	for _, a := range []string{main.EncodeAddress(), "not-an-address"} {
		if _, err := cl.SetPayout(ctx, d.ID, a); !isStatus(err, http.StatusBadRequest) {
			t.Errorf("address %q: %v, want 400", a, err)
		}
	}
	if _, err := cl.SetPayout(ctx, "dev-nobody", addr.EncodeAddress()); !isStatus(err, http.StatusNotFound) {
		t.Errorf("unknown device: %v, want 404", err)
	}
	// "" clears it.
	if got, err := cl.SetPayout(ctx, d.ID, ""); err != nil || got.Payout != nil {
		t.Fatalf("clear: %x, %v", got.Payout, err)
	}
}

func isStatus(err error, status int) bool {
	var ae *httpapi.APIError
	return errors.As(err, &ae) && ae.Status == status
}
