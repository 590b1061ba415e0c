package main

import (
	"bytes"
	"encoding/json"
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

func TestDeviceSetPayout(t *testing.T) {
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
		Registry: reg, Token: testToken,
		Info: func() httpapi.Info { return httpapi.Info{Network: "regtest"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	conn := []string{"--admin", strings.TrimPrefix(srv.URL, "http://"), "--token", testToken}

	k, _ := btcec.NewPrivateKey()
	d, err := reg.Enrol(t.Context(), registry.EnrolRequest{Key: hub.PubKeyOf(k.PubKey()), Roles: []hub.Role{hub.RoleProvider}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	addr, err := btcutil.NewAddressWitnessPubKeyHash(make([]byte, 20), &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := txscript.PayToAddrScript(addr)

	code, out, errOut := runCtl(t, append(conn, "--json", "device", "set-payout", d.ID, addr.EncodeAddress())...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got hub.Device
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Payout, want) {
		t.Fatalf("printed payout %x, want %x", got.Payout, want)
	}
	if s, _ := reg.PayoutScript(t.Context(), d.ID); !bytes.Equal(s, want) {
		t.Fatalf("registry payout %x", s)
	}

	// A mainnet address on a regtest hub, and a missing address, fail.
	main, _ := btcutil.NewAddressWitnessPubKeyHash(make([]byte, 20), &chaincfg.MainNetParams)
	if code, _, _ := runCtl(t, append(conn, "device", "set-payout", d.ID, main.EncodeAddress())...); code == exitOK {
		t.Error("a mainnet address was accepted on regtest")
	}
	if code, _, _ := runCtl(t, append(conn, "device", "set-payout", d.ID)...); code == exitOK {
		t.Error("set-payout without an address or --clear succeeded")
	}
	code, out, errOut = runCtl(t, append(conn, "device", "set-payout", "--clear", d.ID)...)
	if code != exitOK || !strings.Contains(out, "earnings are carried") {
		t.Fatalf("clear: exit %d: %s %s", code, out, errOut)
	}
	if s, _ := reg.PayoutScript(t.Context(), d.ID); s != nil {
		t.Fatalf("payout after clear %x", s)
	}
}
