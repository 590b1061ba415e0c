package gateway_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
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

	"github.com/gorilla/websocket"

	"github.com/m2mhub/m2mhub/ocpp"
	"github.com/m2mhub/m2mhub/ocpp/gateway"
)

// fakeBilling records what the gateway asked of the hub.
type fakeBilling struct {
	mu     sync.Mutex
	log    []string
	refuse map[string]bool // payers whose hold is refused
}

func (b *fakeBilling) add(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log = append(b.log, s)
}

func (b *fakeBilling) Begin(_ context.Context, s gateway.Session) error {
	if b.refuse[s.Payer] {
		b.add("refused " + s.Payer)
		return fmt.Errorf("payer offline: %w", gateway.ErrRefused)
	}
	b.add(fmt.Sprintf("begin %s/%s evse %d payer %s", s.Station, s.TransactionID, s.EvseID, s.Payer))
	return nil
}

func (b *fakeBilling) Readings(_ context.Context, s gateway.Session, signed []string) error {
	b.add(fmt.Sprintf("readings %s %s", s.TransactionID, strings.Join(signed, ",")))
	return nil
}

func (b *fakeBilling) End(_ context.Context, s gateway.Session) error {
	b.add("end " + s.TransactionID)
	return nil
}

func (b *fakeBilling) calls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.log...)
}

type testGW struct {
	gw      *gateway.Gateway
	srv     *httptest.Server
	billing *fakeBilling
	schemas *ocpp.Schemas
}

func startGW(t *testing.T) *testGW {
	t.Helper()
	schemas, err := ocpp.LoadSchemas()
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBilling{refuse: map[string]bool{"broke-car": true}}
	gw, err := gateway.New(gateway.Config{
		Stations: map[string]string{"CS1": "s3cret-password-1", "CS2": "other"},
		Tokens:   map[string]string{"1F2D3A4B": "car-1", "BROKE": "broke-car"},
		Billing:  b,
		Schemas:  schemas,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(gw)
	t.Cleanup(func() {
		gw.Close()
		srv.Close()
	})
	return &testGW{gw: gw, srv: srv, billing: b, schemas: schemas}
}

func (g *testGW) dial(station, user, password string, protos ...string) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{
		TLSClientConfig:  g.srv.Client().Transport.(*http.Transport).TLSClientConfig,
		Subprotocols:     protos,
		HandshakeTimeout: 10 * time.Second,
	}
	h := http.Header{}
	if user != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
	}
	return d.Dial("wss"+strings.TrimPrefix(g.srv.URL, "https")+"/ocpp/"+station, h)
}

// station is the test's charging station.
type station struct {
	t  *testing.T
	ws *websocket.Conn
	s  *ocpp.Schemas
	n  int
}

func (g *testGW) connect(t *testing.T) *station {
	t.Helper()
	ws, _, err := g.dial("CS1", "CS1", "s3cret-password-1", ocpp.Subprotocol)
	if err != nil {
		t.Fatal(err)
	}
	if ws.Subprotocol() != ocpp.Subprotocol {
		t.Fatalf("negotiated %q", ws.Subprotocol())
	}
	t.Cleanup(func() { ws.Close() })
	return &station{t: t, ws: ws, s: g.schemas}
}

func (st *station) read() *ocpp.Frame {
	st.t.Helper()
	st.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := st.ws.ReadMessage()
	if err != nil {
		st.t.Fatal(err)
	}
	f, err := ocpp.Decode(b)
	if err != nil {
		st.t.Fatalf("gateway sent %s: %v", b, err)
	}
	return f
}

func (st *station) raw(b string) *ocpp.Frame {
	st.t.Helper()
	if err := st.ws.WriteMessage(websocket.TextMessage, []byte(b)); err != nil {
		st.t.Fatal(err)
	}
	return st.read()
}

// call sends a CALL and returns the answer, checking a CALLRESULT against
// the response schema as a strict station would.
func (st *station) call(action, payload string) *ocpp.Frame {
	st.t.Helper()
	st.n++
	id := fmt.Sprintf("m%d", st.n)
	f := st.raw(fmt.Sprintf(`[2,%q,%q,%s]`, id, action, payload))
	if f.ID != id {
		st.t.Fatalf("answer to %s has id %s", id, f.ID)
	}
	if f.Type == ocpp.TypeCallResult {
		if err := st.s.Validate(action, ocpp.Response, f.Payload); err != nil {
			st.t.Fatalf("gateway's %s answer %s: %v", action, f.Payload, err)
		}
	}
	return f
}

func (st *station) result(action, payload string) map[string]any {
	st.t.Helper()
	f := st.call(action, payload)
	if f.Type != ocpp.TypeCallResult {
		st.t.Fatalf("%s answered %s %s", action, f.Code, f.Description)
	}
	var m map[string]any
	if err := json.Unmarshal(f.Payload, &m); err != nil {
		st.t.Fatal(err)
	}
	return m
}

func tokenStatus(m map[string]any) any {
	info, _ := m["idTokenInfo"].(map[string]any)
	return info["status"]
}

const boot = `{"chargingStation":{"model":"AC-22","vendorName":"Acme"},"reason":"PowerUp"}`

func txEvent(kind, seq, tx, token, signed string) string {
	s := fmt.Sprintf(`{"eventType":%q,"timestamp":"2026-12-02T03:00:00Z","triggerReason":"Authorized","seqNo":%s,"transactionInfo":{"transactionId":%q},"evse":{"id":1,"connectorId":1}`, kind, seq, tx)
	if token != "" {
		s += fmt.Sprintf(`,"idToken":{"idToken":%q,"type":"ISO14443"}`, token)
	}
	if signed != "" {
		s += `,"meterValue":[` + meterValue(signed) + `]`
	}
	return s + "}"
}

func meterValue(signed string) string {
	return fmt.Sprintf(`{"timestamp":"2026-12-02T03:00:00Z","sampledValue":[{"value":1000,"measurand":"Energy.Active.Import.Register",`+
		`"signedMeterValue":{"signedMeterData":%q,"signingMethod":"ECDSA-secp256r1-SHA256","encodingMethod":"OCMF","publicKey":"pk"}}]}`, signed)
}

func TestSession(t *testing.T) {
	g := startGW(t)
	st := g.connect(t)
	if m := st.result("BootNotification", boot); m["status"] != "Accepted" || m["interval"] != 300.0 {
		t.Fatalf("boot %v", m)
	}
	st.result("Heartbeat", `{}`)
	st.result("StatusNotification", `{"timestamp":"2026-12-02T03:00:00Z","connectorStatus":"Occupied","evseId":1,"connectorId":1}`)
	if m := st.result("Authorize", `{"idToken":{"idToken":"1F2D3A4B","type":"ISO14443"}}`); tokenStatus(m) != "Accepted" {
		t.Fatalf("authorize %v", m)
	}
	if m := st.result("TransactionEvent", txEvent("Started", "0", "tx-1", "1F2D3A4B", "OCMF|b")); tokenStatus(m) != "Accepted" {
		t.Fatalf("started %v", m)
	}
	st.result("MeterValues", `{"evseId":1,"meterValue":[`+meterValue("OCMF|c")+`]}`)
	st.result("TransactionEvent", txEvent("Updated", "1", "tx-1", "", "OCMF|d"))
	st.result("TransactionEvent", txEvent("Ended", "2", "tx-1", "", "OCMF|e"))
	want := []string{"begin CS1/tx-1 evse 1 payer car-1", "readings tx-1 OCMF|b", "readings tx-1 OCMF|c",
		"readings tx-1 OCMF|d", "readings tx-1 OCMF|e", "end tx-1"}
	if got := g.billing.calls(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("billing saw\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestUnknownIDToken(t *testing.T) {
	g := startGW(t)
	st := g.connect(t)
	if m := st.result("Authorize", `{"idToken":{"idToken":"DEADBEEF","type":"ISO14443"}}`); tokenStatus(m) != "Unknown" {
		t.Fatalf("authorize %v", m)
	}
	if m := st.result("TransactionEvent", txEvent("Started", "0", "tx-9", "DEADBEEF", "OCMF|b")); tokenStatus(m) != "Unknown" {
		t.Fatalf("started %v", m)
	}
	st.result("MeterValues", `{"evseId":1,"meterValue":[`+meterValue("OCMF|c")+`]}`)
	st.result("TransactionEvent", txEvent("Ended", "1", "tx-9", "", "OCMF|e"))
	if got := g.billing.calls(); len(got) != 0 {
		t.Fatalf("an unknown token was billed: %v", got)
	}
}

func TestHoldRefused(t *testing.T) {
	g := startGW(t)
	st := g.connect(t)
	if m := st.result("TransactionEvent", txEvent("Started", "0", "tx-2", "BROKE", "OCMF|b")); tokenStatus(m) != "NoCredit" {
		t.Fatalf("started %v", m)
	}
	st.result("TransactionEvent", txEvent("Ended", "1", "tx-2", "", "OCMF|e"))
	if got := g.billing.calls(); strings.Join(got, ";") != "refused broke-car" {
		t.Fatalf("billing saw %v", got)
	}
}

func TestBadFrames(t *testing.T) {
	g := startGW(t)
	st := g.connect(t)
	tests := []struct {
		name, frame string
		id          string
		code        ocpp.ErrorCode
	}{
		{"RpcFrameworkError", `hello`, "-1", ocpp.RPCFrameworkError},
		{"MessageTypeNotSupported", `[7,"x1",{}]`, "x1", ocpp.MessageTypeNotSupported},
		{"FormatViolation", `[2,"x2","Heartbeat"]`, "x2", ocpp.FormatViolation},
		{"OccurrenceConstraintViolation", `[2,"x3","BootNotification",{"reason":"PowerUp"}]`, "x3", ocpp.OccurrenceConstraintViolation},
		{"TypeConstraintViolation", `[2,"x4","MeterValues",{"evseId":"one","meterValue":[]}]`, "x4", ocpp.TypeConstraintViolation},
		{"NotImplemented", `[2,"x5","DataTransfer",{"vendorId":"acme"}]`, "x5", ocpp.NotImplemented},
		{"NotSupported", `[2,"x6","RequestStopTransaction",{"transactionId":"t"}]`, "x6", ocpp.NotSupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := st.raw(tt.frame)
			if f.Type != ocpp.TypeCallError || f.ID != tt.id || f.Code != tt.code {
				t.Fatalf("answered %+v, want CALLERROR %s for %s", f, tt.code, tt.id)
			}
		})
	}
	// The connection is still usable after every violation.
	st.result("Heartbeat", `{}`)
}

func TestAuth(t *testing.T) {
	g := startGW(t)
	tests := []struct {
		name, station, user, password string
		protos                        []string
		status                        int
	}{
		{"Unauthorized/WrongPassword", "CS1", "CS1", "wrong", []string{ocpp.Subprotocol}, http.StatusUnauthorized},
		{"Unauthorized/NoCredentials", "CS1", "", "", []string{ocpp.Subprotocol}, http.StatusUnauthorized},
		{"Unauthorized/OtherStationsPassword", "CS1", "CS2", "other", []string{ocpp.Subprotocol}, http.StatusUnauthorized},
		{"Unauthorized/UnknownStation", "CS9", "CS9", "x", []string{ocpp.Subprotocol}, http.StatusUnauthorized},
		{"BadRequest/NoSubprotocol", "CS1", "CS1", "s3cret-password-1", []string{"ocpp1.6"}, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws, resp, err := g.dial(tt.station, tt.user, tt.password, tt.protos...)
			if err == nil {
				ws.Close()
				t.Fatal("upgraded")
			}
			if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("err %v, response %v; want HTTP %d", err, resp, tt.status)
			}
		})
	}
}

func TestStopPayer(t *testing.T) {
	g := startGW(t)
	st := g.connect(t)
	st.result("TransactionEvent", txEvent("Started", "0", "tx-3", "1F2D3A4B", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type out struct {
		n   int
		err error
	}
	done := make(chan out, 1)
	go func() {
		n, err := g.gw.StopPayer(ctx, "car-1")
		done <- out{n, err}
	}()
	f := st.read()
	if f.Type != ocpp.TypeCall || f.Action != "RequestStopTransaction" {
		t.Fatalf("gateway sent %+v", f)
	}
	if err := g.schemas.Validate(f.Action, ocpp.Request, f.Payload); err != nil {
		t.Fatal(err)
	}
	var req struct {
		TransactionID string `json:"transactionId"`
	}
	if err := json.Unmarshal(f.Payload, &req); err != nil || req.TransactionID != "tx-3" {
		t.Fatalf("stop %s (%v)", f.Payload, err)
	}
	if err := st.ws.WriteMessage(websocket.TextMessage, []byte(`[3,"`+f.ID+`",{"status":"Accepted"}]`)); err != nil {
		t.Fatal(err)
	}
	if o := <-done; o.n != 1 || o.err != nil {
		t.Fatalf("StopPayer: %d, %v", o.n, o.err)
	}
	if n, err := g.gw.StopPayer(ctx, "nobody"); n != 0 || err != nil {
		t.Fatalf("StopPayer(nobody): %d, %v", n, err)
	}
}

func TestStopTransaction(t *testing.T) {
	g := startGW(t)
	st := g.connect(t)
	st.result("BootNotification", boot) // the gateway has registered the connection once it answers
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := g.gw.StopTransaction(ctx, "CS9", "tx"); !errors.Is(err, gateway.ErrNoStation) {
		t.Fatalf("unknown station: %v", err)
	}
	for _, tt := range []struct {
		name, answer string
		want         error
		code         ocpp.ErrorCode
	}{
		{"ErrStopRejected", `{"status":"Rejected"}`, gateway.ErrStopRejected, ""},
		{"ErrSchema/BadAnswer", `{"status":"Maybe"}`, ocpp.ErrSchema, ocpp.PropertyConstraintViolation},
		{"CallError", "", nil, ocpp.GenericError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- g.gw.StopTransaction(ctx, "CS1", "tx-7") }()
			f := st.read()
			frame := `[3,"` + f.ID + `",` + tt.answer + `]`
			if tt.answer == "" {
				frame = `[4,"` + f.ID + `","GenericError","busy",{}]`
			}
			if err := st.ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
				t.Fatal(err)
			}
			err := <-done
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			var oe *ocpp.Error
			if tt.code != "" && (!errors.As(err, &oe) || oe.Code != tt.code) {
				t.Fatalf("err %v, want code %s", err, tt.code)
			}
		})
	}
}
