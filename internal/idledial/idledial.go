// Package idledial holds many idle device sessions open on a hub from a
// child process, for the benchmarks that measure the hub among them: the
// hub's process then holds only its own side of the connections (its
// memory is measured alone) and each process stays within its open-file
// limit. A benchmark calls Spawn; the child is the same test binary
// running a test whose body is Serve.
package idledial

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/brontide"
	"github.com/lightningnetwork/lnd/keychain"
	"github.com/lightningnetwork/lnd/lnwire"

	"github.com/m2mhub/m2mhub/internal/wire"
)

// Env is set in the child's environment: Serve runs only when it is.
const Env = "M2M_IDLE_DIALER"

// Hello connects key to the hub at addr whose identity is hubKey over
// BOLT 8 and exchanges Init; it returns the idle connection.
func Hello(addr *net.TCPAddr, hubKey *btcec.PublicKey, key *btcec.PrivateKey) (*brontide.Conn, error) {
	c, err := brontide.Dial(&keychain.PrivKeyECDH{PrivKey: key},
		&lnwire.NetAddress{IdentityKey: hubKey, Address: addr},
		5*time.Second, net.DialTimeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteMessage(c, wire.NewInit()); err != nil {
		_ = c.Close()
		return nil, err
	}
	msg, err := wire.ReadMessage(c, wire.MaxMessageSize)
	if err == nil {
		if _, ok := msg.(*wire.Init); !ok {
			err = fmt.Errorf("hub answered init with %T", msg)
		}
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// Spawn runs the test named test of this binary as a child process (its
// body calls Serve), which opens an idle session for each of keys on the
// hub at addr, and returns once every one is open. The child is killed
// when tb ends, or earlier by the returned stop.
func Spawn(tb testing.TB, test string, addr net.Addr, hubKey *btcec.PublicKey, keys []*btcec.PrivateKey) (stop func()) {
	tb.Helper()
	var in strings.Builder
	fmt.Fprintf(&in, "%s %x\n", addr, hubKey.SerializeCompressed())
	for _, k := range keys {
		fmt.Fprintf(&in, "%x\n", k.Serialize())
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), Env+"=1")
	cmd.Stdin = strings.NewReader(in.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	tb.Cleanup(stop)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "connected" {
		stop()
		tb.Fatalf("idle dialer: %q %v", line, err)
	}
	return stop
}

// Serve is the child's side of Spawn: unless Env is set it skips t. It
// reads the hub's address and key and then one device key per line from
// stdin, opens an idle session for each (four dialers at a time), prints
// "connected" and holds them until it is killed.
func Serve(t *testing.T) {
	if os.Getenv(Env) == "" {
		t.Skip("the device side of a benchmark among idle sessions")
	}
	sc := bufio.NewScanner(os.Stdin)
	if !sc.Scan() {
		t.Fatal("no hub line")
	}
	addr, keyHex, _ := strings.Cut(sc.Text(), " ")
	hk, err := hex.DecodeString(keyHex)
	if err != nil {
		t.Fatal(err)
	}
	hubKey, err := btcec.ParsePubKey(hk)
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var keys []*btcec.PrivateKey
	for sc.Scan() {
		kb, err := hex.DecodeString(sc.Text())
		if err != nil {
			t.Fatal(err)
		}
		k, _ := btcec.PrivKeyFromBytes(kb)
		keys = append(keys, k)
	}
	conns := make([]*brontide.Conn, len(keys))
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(keys); i += 4 {
				c, err := Hello(tcp, hubKey, keys[i])
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	fmt.Println("connected")
	select {} // until killed
}
