package deploy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/m2mhub/m2mhub/hub/natsintake"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestNATSConfig loads deploy/nats/nats-server.conf with nats-server's own
// parser, with the provider template filled in for one provider, runs it,
// and checks what the hub and the provider may do on it.
func TestNATSConfig(t *testing.T) {
	const (
		password = "test-password"
		provider = "dev-00000000000000aa"
	)
	t.Setenv("HUB_NATS_PASSWORD", password)
	t.Setenv("NATS_SERVER_NAME", "nats-test")
	confPath := filepath.Join(repoRoot, "deploy/nats/nats-server.conf")
	plain, err := server.ProcessConfigFile(confPath)
	if err != nil {
		t.Fatalf("nats-server rejects %s: %v", confPath, err)
	}
	if !plain.JetStream || !plain.SyncAlways {
		t.Fatalf("JetStream %v, fsync on every write %v: want both", plain.JetStream, plain.SyncAlways)
	}

	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	filled := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(filled, []byte(fillProviderTemplate(t, confPath, pub, provider)), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(filled)
	if err != nil {
		t.Fatalf("the provider template does not load: %v", err)
	}
	opts.Port, opts.HTTPPort = -1, 0
	// One node alone: the compose cluster's routes name hosts that do
	// not exist here.
	if opts.Cluster.Name != "m2mhub" || len(opts.Routes) != 3 {
		t.Fatalf("cluster %q with %d routes, want m2mhub with 3", opts.Cluster.Name, len(opts.Routes))
	}
	opts.Cluster, opts.Routes = server.ClusterOpts{}, nil
	opts.StoreDir = t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("ErrWrongHubPassword", func(t *testing.T) {
		nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("hub", "wrong"), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			t.Fatal("connected with a wrong password")
		}
	})

	// The hub: full rights, makes the metering streams as hubd does.
	hubConn, err := nats.Connect(ns.ClientURL(), nats.UserInfo("hub", password))
	if err != nil {
		t.Fatalf("hub user: %v", err)
	}
	defer hubConn.Close()
	hubJS, err := jetstream.New(hubConn)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsintake.EnsureStreams(ctx, hubJS, 0); err != nil {
		t.Fatalf("hub cannot create the metering streams: %v", err)
	}
	if err := natsintake.EnsureReceiptsConsumer(ctx, hubJS, provider); err != nil {
		t.Fatalf("hub cannot create the provider's receipts consumer: %v", err)
	}

	// The provider, with the inbox prefix its permissions allow.
	violations := make(chan string, 8)
	provConn, err := nats.Connect(ns.ClientURL(),
		nats.Nkey(pub, kp.Sign),
		nats.CustomInboxPrefix("_INBOX_"+provider),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				violations <- err.Error()
			}
		}))
	if err != nil {
		t.Fatalf("provider user: %v", err)
	}
	defer provConn.Close()
	provJS, err := jetstream.New(provConn)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ProviderPublishesOwnUsage", func(t *testing.T) {
		ack, err := provJS.Publish(ctx, "usage."+provider, []byte(`{}`))
		if err != nil {
			t.Fatalf("publish on its own subject: %v", err)
		}
		if ack.Stream != "M2M_USAGE" {
			t.Fatalf("stored in %s", ack.Stream)
		}
	})
	t.Run("ErrProviderPublishesForOther", func(t *testing.T) {
		if err := provConn.Publish("usage.dev-00000000000000bb", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		mustViolate(t, provConn, violations, "usage.dev-00000000000000bb")
	})
	t.Run("ErrProviderReadsOtherReceipts", func(t *testing.T) {
		sub, err := provConn.SubscribeSync("receipts.dev-00000000000000bb")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		mustViolate(t, provConn, violations, "receipts.dev-00000000000000bb")
	})
	t.Run("ProviderReadsOwnReceipts", func(t *testing.T) {
		if _, err := hubJS.Publish(ctx, "receipts."+provider, []byte(`receipt`)); err != nil {
			t.Fatal(err)
		}
		cons, err := provJS.Consumer(ctx, "M2M_RECEIPTS", "rcpt-"+provider)
		if err != nil {
			t.Fatalf("provider cannot reach its consumer: %v", err)
		}
		msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range msgs.Messages() {
			got++
			if err := m.Ack(); err != nil {
				t.Fatal(err)
			}
		}
		if got != 1 || msgs.Error() != nil {
			t.Fatalf("fetched %d receipts, err %v", got, msgs.Error())
		}
	})
}

// mustViolate waits for the server to refuse subject to the provider.
func mustViolate(t *testing.T, nc *nats.Conn, violations <-chan string, subject string) {
	t.Helper()
	_ = nc.Flush()
	select {
	case v := <-violations:
		if !strings.Contains(v, subject) {
			t.Fatalf("violation for another subject: %s", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s was allowed", subject)
	}
}

// fillProviderTemplate uncomments the provider block of the NATS config and
// names one provider in it, as docs/operations.md tells operators to.
func fillProviderTemplate(t *testing.T, path, nkey, provider string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	in, seen := false, false
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		switch strings.TrimSpace(line) {
		case "# BEGIN provider template":
			in, seen = true, true
			continue
		case "# END provider template":
			in = false
			continue
		}
		if in {
			line = strings.Replace(line, "# ", "", 1)
			line = strings.ReplaceAll(line, "PROVIDER_NKEY", nkey)
			line = strings.ReplaceAll(line, "PROVIDER_ID", provider)
		}
		out.WriteString(line + "\n")
	}
	if !seen {
		t.Fatal("no provider template in the NATS config")
	}
	return out.String()
}

// TestRedisConfig runs redis-server on deploy/redis/redis.conf (port, dir
// and bind overridden for the test) and reads back the durability settings.
func TestRedisConfig(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not on PATH: make test installs it when run as root, or apt-get install -y redis-server")
	}
	conf, err := filepath.Abs(filepath.Join(repoRoot, "deploy/redis/redis.conf"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, conf, "--port", fmt.Sprint(port), "--dir", dir,
		"--bind", "127.0.0.1", "--requirepass", "test-password", "--daemonize", "no")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), Password: "test-password"})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for rdb.Ping(ctx).Err() != nil {
		if ctx.Err() != nil {
			t.Fatalf("redis-server with %s did not come up:\n%s", conf, logs.String())
		}
		time.Sleep(50 * time.Millisecond) // waiting for a child process to listen
	}
	for key, want := range map[string]string{
		"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction",
	} {
		got, err := rdb.ConfigGet(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got[key] != want {
			t.Errorf("%s = %q, want %q", key, got[key], want)
		}
	}
	if err := rdb.Set(ctx, "m2mhub:probe", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	aof, err := rdb.ConfigGet(ctx, "appenddirname").Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, aof["appenddirname"])); err != nil {
		t.Errorf("no AOF in the data dir: %v", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// checkBtcd checks deploy/btcd/btcd.conf against btcd's options and the
// hubs' view of the node: the same RPC user, the certificate where the
// hubs look for it, the indexes hubd needs, and a regtest mining address.
func checkBtcd(t *testing.T, p *types.Project, bins *binaries) {
	conf := readIni(t, filepath.Join(repoRoot, "deploy/btcd/btcd.conf"))
	for k := range conf {
		if !bins.flags["btcd"][k] {
			t.Errorf("btcd.conf: btcd has no option %s", k)
		}
	}
	for _, k := range []string{"regtest", "txindex", "addrindex"} {
		if conf[k] != "1" {
			t.Errorf("btcd.conf: %s = %q, want 1", k, conf[k])
		}
	}
	hubIni := readIni(t, filepath.Join(repoRoot, "deploy/hubd/hubd.ini"))
	if hubIni["btcd.rpcuser"] != conf["rpcuser"] {
		t.Errorf("hubd.ini rpcuser %q, btcd.conf %q", hubIni["btcd.rpcuser"], conf["rpcuser"])
	}
	// The certificate: btcd writes it into its /data volume, the hubs
	// mount that volume and read it from their own path.
	btcd := p.Services["btcd"]
	btcdVol := dataVolume(btcd)
	rel, ok := strings.CutPrefix(conf["rpccert"], "/data/")
	if !ok {
		t.Fatalf("btcd.conf rpccert %q is not in btcd's /data volume", conf["rpccert"])
	}
	for _, name := range []string{"hubd-1", "hubd-2"} {
		found := false
		for _, v := range p.Services[name].Volumes {
			if v.Source == btcdVol && filepath.Join(v.Target, rel) == hubIni["btcd.rpccert"] {
				found = true
			}
		}
		if !found {
			t.Errorf("%s does not see btcd's certificate at %s", name, hubIni["btcd.rpccert"])
		}
	}
	// The mining address default must be a regtest address btcd accepts.
	for _, arg := range btcd.Command {
		if addr, ok := strings.CutPrefix(arg, "--miningaddr="); ok {
			if _, err := btcutil.DecodeAddress(addr, &chaincfg.RegressionNetParams); err != nil {
				t.Errorf("miningaddr %s: %v", addr, err)
			}
		}
	}
	if hubIni["btcd.rpchost"] != "btcd:18334" || !strings.HasSuffix(conf["rpclisten"], ":18334") {
		t.Errorf("hubs dial %s, btcd listens on %s", hubIni["btcd.rpchost"], conf["rpclisten"])
	}
}

// readIni reads key = value lines, skipping sections and comments.
func readIni(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == ';' || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not key=value: %q", path, line)
		}
		kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return kv
}
