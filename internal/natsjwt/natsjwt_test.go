package natsjwt_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/internal/natsjwt"
	"github.com/m2mhub/m2mhub/internal/natsjwt/natsjwttest"
	"github.com/m2mhub/m2mhub/metering"
)

// operatorServer runs an in-process nats-server in operator mode trusting
// a's operator, with a full account resolver holding the system and hub
// accounts, as an external cluster would be configured.
func operatorServer(t *testing.T, a *natsjwt.Authority) *server.Server {
	t.Helper()
	opJWT, err := a.OperatorJWT()
	if err != nil {
		t.Fatal(err)
	}
	op, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	res, err := server.NewDirAccResolver(t.TempDir(), 0, time.Minute, server.NoDelete)
	if err != nil {
		t.Fatal(err)
	}
	sysJWT, err := a.SystemAccountJWT()
	if err != nil {
		t.Fatal(err)
	}
	accJWT, err := a.AccountJWT(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Store(a.SystemAccount(), sysJWT); err != nil {
		t.Fatal(err)
	}
	if err := res.Store(a.Account(), accJWT); err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		TrustedOperators: []*jwt.OperatorClaims{op}, SystemAccount: a.SystemAccount(), AccountResolver: res,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return s
}

// TestProviderUserOnOperatorServer: a provider's credentials, signed by the
// hub account's signing key, connect to a server that was configured with
// nothing but the operator JWT and the accounts; they publish on the
// provider's usage subject and not on another provider's; after the
// revocation is pushed on $SYS.REQ.CLAIMS.UPDATE the provider is
// disconnected and cannot connect again.
func TestProviderUserOnOperatorServer(t *testing.T) {
	seeds, err := natsjwt.NewSeeds()
	if err != nil {
		t.Fatal(err)
	}
	a, err := natsjwt.New(seeds)
	if err != nil {
		t.Fatal(err)
	}
	s := operatorServer(t, a)

	hubUser, err := a.HubUser("hubd")
	if err != nil {
		t.Fatal(err)
	}
	hub, err := nats.Connect(s.ClientURL(), nats.UserCredentials(natsjwttest.CredsFile(t, hubUser)))
	if err != nil {
		t.Fatalf("hub connect: %v", err)
	}
	defer hub.Close()
	got, err := hub.SubscribeSync("usage.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Flush(); err != nil {
		t.Fatal(err)
	}

	prov, err := a.ProviderUser("p1")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asyncErrs []error
	closed := make(chan struct{})
	pc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(natsjwttest.CredsFile(t, prov)), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			asyncErrs = append(asyncErrs, err)
			mu.Unlock()
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("provider connect: %v", err)
	}
	defer pc.Close()

	// Another provider's subject is refused, its own goes through; the
	// server keeps one connection's order, so the refused message would
	// have arrived first.
	if err := pc.Publish(metering.UsageSubject("p2"), []byte("forged")); err != nil {
		t.Fatal(err)
	}
	if err := pc.Publish(metering.UsageSubject("p1"), []byte("mine")); err != nil {
		t.Fatal(err)
	}
	if err := pc.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := got.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("provider's own usage not received: %v", err)
	}
	if m.Subject != metering.UsageSubject("p1") || string(m.Data) != "mine" {
		t.Fatalf("received %s %q, want the provider's own usage", m.Subject, m.Data)
	}
	// waitErr waits for an asynchronous permission violation naming subj.
	waitErr := func(subj string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			for _, e := range asyncErrs {
				if errors.Is(e, nats.ErrPermissionViolation) && strings.Contains(e.Error(), subj) {
					mu.Unlock()
					return
				}
			}
			mu.Unlock()
			if time.Now().After(deadline) {
				t.Fatalf("no permission violation for %s (errors %v)", subj, asyncErrs)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitErr(`Publish to "` + metering.UsageSubject("p2") + `"`)
	// Nor may it read another provider's receipts.
	if _, err := pc.SubscribeSync(metering.ReceiptsSubject("p2")); err != nil {
		t.Fatal(err)
	}
	waitErr(`Subscription to "` + metering.ReceiptsSubject("p2") + `"`)
	// Its own receipts it may read.
	if _, err := pc.SubscribeSync(metering.ReceiptsSubject("p1")); err != nil {
		t.Fatal(err)
	}
	if err := pc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, e := range asyncErrs {
		if strings.Contains(e.Error(), `"`+metering.ReceiptsSubject("p1")+`"`) {
			t.Errorf("own receipts refused: %v", e)
		}
	}
	mu.Unlock()

	// Another provider, connected throughout.
	p2, err := a.ProviderUser("p2")
	if err != nil {
		t.Fatal(err)
	}
	p2Closed := make(chan struct{})
	p2c, err := nats.Connect(s.ClientURL(), nats.UserCredentials(natsjwttest.CredsFile(t, p2)), nats.NoReconnect(),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		nats.ClosedHandler(func(*nats.Conn) { close(p2Closed) }))
	if err != nil {
		t.Fatalf("p2 connect: %v", err)
	}
	defer p2c.Close()
	// The same provider's key is the same on every issue (and instance).
	if again, err := a.ProviderUser("p1"); err != nil || again.PublicKey != prov.PublicKey {
		t.Fatalf("p1 issued again: key %s, first %s (%v)", again.PublicKey, prov.PublicKey, err)
	}

	// Revoke p1: the account JWT with the revocation, pushed as the
	// system account's user.
	sys := natsjwttest.SystemConn(t, a, s.ClientURL())
	natsjwttest.RevokeAndWait(t, a, sys, closed, "p1")
	refused := func(u natsjwt.User) {
		t.Helper()
		c, err := nats.Connect(s.ClientURL(), nats.UserCredentials(natsjwttest.CredsFile(t, u)), nats.NoReconnect())
		if err == nil {
			c.Close()
			t.Fatal("revoked provider connected again")
		}
		if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("revoked connect: %v, want an authorization error", err)
		}
	}
	refused(prov)
	if !p2c.IsConnected() {
		t.Fatal("p2 disconnected by p1's revocation")
	}

	// Another instance (same seeds) revokes p2: it starts from the account
	// JWT the cluster holds, so p1 stays revoked.
	b, err := natsjwt.New(seeds)
	if err != nil {
		t.Fatal(err)
	}
	natsjwttest.RevokeAndWait(t, b, sys, p2Closed, "p2")
	refused(p2)
	refused(prov)
	// The hub's own user is untouched.
	if err := hub.Publish(metering.UsageSubject("p1"), []byte("hub")); err != nil || hub.Flush() != nil {
		t.Fatalf("hub after revocation: %v", err)
	}
}
