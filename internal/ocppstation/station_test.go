package ocppstation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/m2mhub/m2mhub/internal/ocppstation"
	"github.com/m2mhub/m2mhub/metering/ocmf"
	"github.com/m2mhub/m2mhub/ocpp/gateway"
)

// billing records the gateway's calls and verifies each reading against
// the meter's key, as m2mbilling does.
type billing struct {
	pub *ocmf.PublicKey

	mu    sync.Mutex
	calls []string
	good  int
}

func (b *billing) Begin(_ context.Context, s gateway.Session) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, fmt.Sprintf("begin %s %s evse %d", s.TransactionID, s.Payer, s.EvseID))
	return nil
}

func (b *billing) Readings(_ context.Context, s gateway.Session, signed []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, raw := range signed {
		m, err := ocmf.Parse(raw)
		if err != nil {
			return err
		}
		if err := m.Verify(b.pub); err != nil {
			return err
		}
		b.good++
	}
	b.calls = append(b.calls, fmt.Sprintf("readings %d", len(signed)))
	return nil
}

func (b *billing) End(_ context.Context, s gateway.Session) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, "end "+s.TransactionID)
	return nil
}

// TestStation runs the Go station against the gateway over TLS with
// basic auth: a wrong password gets HTTP 401; boot, authorize (unknown
// and known token), a transaction whose OCMF readings verify against the
// meter's key, and its end reach the billing in order, and every message
// passed the schemas both ways (Call checks them).
func TestStation(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	meter := &ocppstation.Meter{Key: key, Serial: "TEST-1", Token: "1F2D3A4B"}
	pubB64, err := meter.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := base64.StdEncoding.DecodeString(pubB64)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ocmf.ParsePublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	b := &billing{pub: pub}
	gw, err := gateway.New(gateway.Config{Stations: map[string]string{"CS1": "s3cret-password-1"},
		Tokens: map[string]string{"1F2D3A4B": "car-1"}, Billing: b, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(gw)
	t.Cleanup(func() { gw.Close(); srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := ocppstation.DialConfig{URL: "wss" + strings.TrimPrefix(srv.URL, "https") + "/ocpp", Station: "CS1", Password: "wrong-password-0000",
		TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()}

	t.Run("ErrUnauthorized", func(t *testing.T) {
		if _, err := ocppstation.Dial(ctx, cfg); err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("dial with a wrong password: %v", err)
		}
	})
	t.Run("ErrUntrustedCertificate", func(t *testing.T) {
		c := cfg
		c.Password, c.TLS = "s3cret-password-1", &tls.Config{MinVersion: tls.VersionTLS12}
		if _, err := ocppstation.Dial(ctx, c); err == nil {
			t.Fatal("dialled a gateway whose certificate it does not trust")
		}
	})
	t.Run("OK", func(t *testing.T) {
		c := cfg
		c.Password = "s3cret-password-1"
		st, err := ocppstation.Dial(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.Boot(ctx, "AC-22", "Acme", 1); err != nil {
			t.Fatal(err)
		}
		if err := st.Authorize(ctx, "NOBODY00"); !errors.Is(err, ocppstation.ErrNotAccepted) {
			t.Fatalf("unknown token: %v", err)
		}
		if err := st.Authorize(ctx, "1F2D3A4B"); err != nil {
			t.Fatal(err)
		}
		start := time.Date(2026, 12, 2, 22, 0, 0, 0, time.UTC)
		var rs []ocppstation.Reading
		for i, tx := range []string{"B", "C", "C", "E"} {
			r, err := meter.Sign(i+1, start.Add(time.Duration(i)*time.Minute), tx, decimal.New(1000+int64(i), 0))
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		tx, err := st.Start(ctx, "tx-1", 1, "1F2D3A4B", rs[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Update(ctx, rs[1:3]); err != nil {
			t.Fatal(err)
		}
		if err := tx.End(ctx, rs[3]); err != nil {
			t.Fatal(err)
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		want := "begin tx-1 car-1 evse 1|readings 1|readings 2|readings 1|end tx-1"
		if got := strings.Join(b.calls, "|"); got != want || b.good != 4 {
			t.Fatalf("billing saw %s (%d good readings), want %s", got, b.good, want)
		}
	})
}
