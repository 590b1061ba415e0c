package session_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"
	"github.com/lightningnetwork/lnd/lnwire"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/hubtest"
	"github.com/m2mhub/m2mhub/internal/wire"
)

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// floodConn is an authenticated device connection that speaks the wire
// directly: it sends what it likes and reads only when told to.
func floodConn(t *testing.T, h *hubtest.Hub, key *btcec.PrivateKey) *brontide.Conn {
	t.Helper()
	addr, err := net.ResolveTCPAddr("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c, err := brontide.Dial(&keychain.PrivKeyECDH{PrivKey: key},
		&lnwire.NetAddress{IdentityKey: h.PubKey(), Address: addr}, 5*time.Second, net.DialTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteMessage(c, wire.NewInit()); err != nil {
		t.Fatal(err)
	}
	if m, err := wire.ReadMessage(c, wire.MaxMessageSize); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*wire.Init); !ok {
		t.Fatalf("hub answered init with %T", m)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// drain reads c until it fails, within d, and returns what it read: the
// number of each kind of answer and the hub's final Error, if any.
func drain(t *testing.T, c *brontide.Conn, d time.Duration) (pongs, refusals int, last *wire.CodeError) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	for {
		m, err := wire.ReadMessage(c, wire.MaxMessageSize)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("hub neither answered nor closed within %v", d)
			}
			return pongs, refusals, last
		}
		switch m := m.(type) {
		case *wire.Pong:
			pongs++
		case *wire.ChannelError:
			refusals++
		case *wire.Error:
			last = wire.ParseError(m)
		}
	}
}

// windowed sends n rounds of msgs(i), reading the hub's answers every 16
// rounds (below the hub's send queue, so the device is never too slow), and
// returns the channel refusal codes it got, failing on anything else.
func windowed(t *testing.T, c *brontide.Conn, n int, msgs func(i int) []wire.Message) map[wire.ChanCode]int {
	t.Helper()
	codes := map[wire.ChanCode]int{}
	read := func(want int) {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for got := 0; got < want; {
			m, err := wire.ReadMessage(c, wire.MaxMessageSize)
			if err != nil {
				t.Fatalf("after %v: %v", codes, err)
			}
			switch m := m.(type) {
			case *wire.ChannelError:
				codes[m.Code]++
				got++
			case *wire.Ping:
				_ = wire.WriteMessage(c, wire.NewPong(make([]byte, m.NumPongBytes)))
			case *wire.Error:
				t.Fatalf("session closed after %v: %v", codes, wire.ParseError(m))
			}
		}
	}
	pending := 0
	for i := range n {
		for _, m := range msgs(i) {
			if err := wire.WriteMessage(c, m); err != nil {
				t.Fatal(err)
			}
		}
		if pending++; pending == 16 {
			read(pending)
			pending = 0
		}
	}
	read(pending)
	return codes
}

// TestFloods attacks a real hub (registry, bolt store, channel manager,
// btcd regtest, admin API) from unauthenticated sources and from registered
// devices at once: stalled handshakes from two hosts, a device sending pings
// without reading the pongs, one sending an oversized message, one sending
// unknown message types, and one sending payments with invalid signatures.
// Each flooding session is throttled or dropped with a clear code, the
// hub's heap stays bounded, and afterwards a legitimate device still pays
// (its channel and receipt agree to the msat) and an operator is served.
func TestFloods(t *testing.T) {
	h := hubtest.Start(t, hubtest.Config{Server: func(c *session.Config) { c.MaxMessageSize = 4096 }})
	ctx := t.Context()
	const token = "m2m_floods_test_operator_token"
	api, err := httpapi.New(httpapi.Config{
		Registry: h.Registry(), Token: token, Channels: h.Channels(),
		Info: func() httpapi.Info { return httpapi.Info{Network: "regtest"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	admin := httptest.NewServer(api)
	t.Cleanup(admin.Close)
	operator := httpapi.NewClient(strings.TrimPrefix(admin.URL, "http://"), token)

	// The legitimate payer and its provider, and a payer gone rogue with a
	// channel of its own, opened honestly through the client library.
	payKey, payID := h.EnrolDevice(t, hub.RolePayer)
	_, provID := h.EnrolDevice(t, hub.RoleProvider)
	sess := h.Dial(t, payKey)
	dev := h.NewDevice(t, sess, payKey, m2mclient.DeviceConfig{})
	ch := h.OpenChannel(t, dev, 70_000)
	rogueKey, _ := h.EnrolDevice(t, hub.RolePayer)
	rogueSess := h.Dial(t, rogueKey)
	rogueCh := h.OpenChannel(t, h.NewDevice(t, rogueSess, rogueKey, m2mclient.DeviceConfig{}), 70_000)
	_ = rogueSess.Close()

	before := heapInUse()
	flood := startStallFlood(t, h.Addr(), h.PubKey(), 2, 2000)
	defer flood.stop()

	var wg sync.WaitGroup
	attack := func(name string, f func(t *testing.T)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name, f)
		}()
	}
	attack("PingsUnread", func(t *testing.T) {
		key, id := h.EnrolDevice(t, hub.RolePayer)
		c := floodConn(t, h, key)
		// 256 pong bytes each: far more pongs than the socket buffers
		// hold, so the hub's send queue overflows.
		for range 40000 {
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := wire.WriteMessage(c, wire.NewPing(session.MaxPongBytes)); err != nil {
				break // dropped
			}
		}
		hubtest.WaitFor(t, 10*time.Second, "flooding session dropped", func() bool {
			_, ok := h.Server().Session(id)
			return !ok
		})
		if _, _, last := drain(t, c, 10*time.Second); last != nil && last.Code != wire.CodeTooSlow {
			t.Fatalf("dropped with %q, want too-slow", last.Code)
		}
	})
	attack("Oversized", func(t *testing.T) {
		key, _ := h.EnrolDevice(t, hub.RolePayer)
		c := floodConn(t, h, key)
		_ = wire.WriteMessage(c, &wire.Custom{Type: wire.TypeBase + 0xF1, Data: make([]byte, 60000)})
		if _, _, last := drain(t, c, 5*time.Second); last == nil || last.Code != wire.CodeMessageTooLarge {
			t.Fatalf("hub's last error %v, want message-too-large", last)
		}
	})
	attack("UnknownTypes", func(t *testing.T) {
		key, id := h.EnrolDevice(t, hub.RolePayer)
		c := floodConn(t, h, key)
		codes := windowed(t, c, 2000, func(i int) []wire.Message {
			// Even types must be understood: each is refused. The odd
			// one beside it is ignored.
			return []wire.Message{
				&wire.Custom{Type: wire.MessageType(0xF000 + 2*(i%50)), Data: []byte("x")},
				&wire.Custom{Type: 0xF001, Data: []byte("y")},
			}
		})
		if codes[wire.ChanMalformed] != 2000 {
			t.Fatalf("refusals %v, want 2000 malformed (docs/protocol.md §2.2)", codes)
		}
		if _, ok := h.Server().Session(id); !ok {
			t.Fatal("session dropped for unknown messages it was told about")
		}
	})
	attack("BadSignatures", func(t *testing.T) {
		c := floodConn(t, h, rogueKey)
		const n = 2000
		codes := windowed(t, c, n, func(int) []wire.Message {
			var sig [64]byte
			_, _ = rand.Read(sig[:])
			return []wire.Message{&wire.Pay{ChanID: rogueCh.ID, Seq: 1, Paid: 1000, Amount: 1000, Payee: provID, Sig: sig}}
		})
		// Each is refused for its signature, or, past the per-device
		// payment rate, before any signature is checked.
		if codes[wire.ChanBadSignature]+codes[wire.ChanRateLimited] != n {
			t.Fatalf("refusals %v, want %d of bad-signature and rate-limited", codes, n)
		}
		rec, err := h.Store().Channel(ctx, rogueCh.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Seq != 0 || rec.Paid != 0 {
			t.Fatalf("refused payments moved the channel to seq %d paid %d", rec.Seq, rec.Paid)
		}
	})
	wg.Wait()

	during := heapInUse()
	t.Logf("heap in use: %d KiB before the floods, %d KiB with them held", before>>10, during>>10)
	if during > before && during-before > 64<<20 {
		t.Fatalf("heap grew by %d MiB under the floods", (during-before)>>20)
	}

	// Still served: the legitimate device pays and the operator lists
	// devices, with the stalled handshakes still held.
	hubtest.WaitFor(t, 10*time.Second, "legitimate device connected", sess.Connected)
	const amount = 1_234_567
	rc, err := dev.Pay(ctx, ch.ID, provID, amount, "after the floods")
	if err != nil {
		t.Fatalf("legitimate payment refused after the floods: %v", err)
	}
	rec, err := h.Store().Channel(ctx, ch.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Paid != amount || rec.Paid != amount {
		t.Fatalf("receipt paid %d, channel paid %d, want %d", rc.Paid, rec.Paid, amount)
	}
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	devs, err := operator.Devices(octx)
	if err != nil {
		t.Fatalf("operator not served: %v", err)
	}
	found := false
	for _, d := range devs {
		found = found || d.ID == payID
	}
	if !found {
		t.Fatalf("operator's device list lacks %s", payID)
	}
}
