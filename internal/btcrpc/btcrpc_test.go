package btcrpc

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/btcsuite/btcd/btcjson"
)

// TestCallsResumeTLSSession: every call is a new connection (btcd closes
// each one), and each after the first resumes the TLS session from the
// ticket the node gave, instead of a full handshake.
func TestCallsResumeTLSSession(t *testing.T) {
	var mu sync.Mutex
	var resumed []bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		resumed = append(resumed, r.TLS.DidResume)
		mu.Unlock()
		w.Header().Set("Connection", "close")
		w.Write([]byte(`[{"result":7,"error":null,"id":0}]`))
	}))
	srv.StartTLS()
	defer srv.Close()

	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c := New(Config{Host: strings.TrimPrefix(srv.URL, "https://"), User: "u", Pass: "p", Cert: cert})
	for i := 0; i < 3; i++ {
		var n int64
		if err := c.Call(context.Background(), btcjson.NewGetBlockCountCmd(), &n); err != nil {
			t.Fatal(err)
		}
		if n != 7 {
			t.Fatalf("call %d: result %d, want 7", i, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(resumed) != 3 || resumed[0] || !resumed[1] || !resumed[2] {
		t.Fatalf("resumed per call %v, want [false true true]", resumed)
	}
}
