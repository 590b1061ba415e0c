package datadir

import (
	"os"
	"testing"
)

func TestKeysCreatedOnceWithMode0600(t *testing.T) {
	d := Dir(t.TempDir())
	k1, err := d.LoadOrCreateKey(HubKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(d.Path(HubKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	k2, err := d.LoadOrCreateKey(HubKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Key.Equals(&k2.Key) {
		t.Fatal("key changed on second load")
	}
	tok1, _ := d.LoadOrCreateToken(AdminTokenFile)
	tok2, _ := d.LoadOrCreateToken(AdminTokenFile)
	if tok1 == "" || tok1 != tok2 {
		t.Fatalf("tokens %q %q", tok1, tok2)
	}
}

func TestRefusesLooseKeyFile(t *testing.T) {
	d := Dir(t.TempDir())
	if _, err := d.LoadOrCreateKey(HubKeyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d.Path(HubKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.LoadKey(HubKeyFile); err == nil {
		t.Fatal("world-readable key accepted")
	}
}

func TestRuntimeRoundTrip(t *testing.T) {
	d := Dir(t.TempDir())
	if _, err := d.ReadRuntime(); err == nil {
		t.Fatal("missing runtime file read")
	}
	want := Runtime{PID: 7, PubKey: "02ab", P2PAddr: "127.0.0.1:1", AdminAddr: "127.0.0.1:2", Btcd: &BtcdRPC{Host: "h"}}
	if err := d.WriteRuntime(want); err != nil {
		t.Fatal(err)
	}
	got, err := d.ReadRuntime()
	if err != nil || got.PID != 7 || got.Btcd == nil || got.Btcd.Host != "h" {
		t.Fatalf("got %+v, %v", got, err)
	}
	if err := d.RemoveRuntime(); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveRuntime(); err != nil {
		t.Fatal("second remove:", err)
	}
}
