package ocppstation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/shopspring/decimal"

	"github.com/m2mhub/m2mhub/ocpp"
)

// CallError is a CALLERROR the gateway answered a call with.
type CallError struct {
	Action      string
	Code        ocpp.ErrorCode
	Description string
}

// Error names the action and the gateway's code.
func (e *CallError) Error() string {
	return fmt.Sprintf("ocppstation: %s answered %s: %s", e.Action, e.Code, e.Description)
}

// DialConfig says where a Go station connects and how it logs in.
type DialConfig struct {
	// URL is the gateway's endpoint without the station id
	// (wss://host:port/ocpp).
	URL string
	// Station and Password are its identity and basic-auth password
	// (security profile 2).
	Station, Password string
	// TLS is the client's TLS configuration (the gateway's CA in
	// RootCAs).
	TLS *tls.Config
	// Schemas checks every message both ways; LoadSchemas when nil.
	Schemas *ocpp.Schemas
	// Timeout bounds each call's wait for its answer; 30 s when zero.
	Timeout time.Duration
}

// Station is a charging station written in Go: it speaks OCPP-J 2.0.1
// over one WebSocket and, like a strict station, checks each call it
// sends and each answer it gets against the official schemas. Calls are
// made one at a time, as OCPP-J allows. A CALL from the gateway is
// answered NotImplemented: this station takes no remote commands.
type Station struct {
	ws      *websocket.Conn
	schemas *ocpp.Schemas
	timeout time.Duration

	mu sync.Mutex // one call at a time
	n  int
}

// Dial connects and logs in as cfg.Station.
func Dial(ctx context.Context, cfg DialConfig) (*Station, error) {
	schemas := cfg.Schemas
	if schemas == nil {
		s, err := ocpp.LoadSchemas()
		if err != nil {
			return nil, err
		}
		schemas = s
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	d := websocket.Dialer{TLSClientConfig: cfg.TLS, Subprotocols: []string{ocpp.Subprotocol}, HandshakeTimeout: cfg.Timeout}
	h := http.Header{}
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(cfg.Station+":"+cfg.Password)))
	ws, resp, err := d.DialContext(ctx, strings.TrimSuffix(cfg.URL, "/")+"/"+cfg.Station, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("ocppstation: dial %s: %w (HTTP %s)", cfg.Station, err, resp.Status)
		}
		return nil, fmt.Errorf("ocppstation: dial %s: %w", cfg.Station, err)
	}
	if ws.Subprotocol() != ocpp.Subprotocol {
		ws.Close()
		return nil, fmt.Errorf("ocppstation: gateway chose subprotocol %q", ws.Subprotocol())
	}
	return &Station{ws: ws, schemas: schemas, timeout: cfg.Timeout}, nil
}

// Close closes the connection.
func (s *Station) Close() error { return s.ws.Close() }

// Call sends action with payload req and decodes the answer into resp
// (which may be nil). A CALLERROR is a *CallError.
func (s *Station) Call(ctx context.Context, action string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("ocppstation: %s: %w", action, err)
	}
	if err := s.schemas.Validate(action, ocpp.Request, body); err != nil {
		return fmt.Errorf("ocppstation: %s: %w", action, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	id := fmt.Sprintf("m%d", s.n)
	frame, err := ocpp.EncodeCall(id, action, json.RawMessage(body))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(s.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.ws.SetWriteDeadline(deadline)
	if err := s.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		return fmt.Errorf("ocppstation: %s: %w", action, err)
	}
	for {
		_ = s.ws.SetReadDeadline(deadline)
		_, b, err := s.ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("ocppstation: %s: %w", action, err)
		}
		f, err := ocpp.Decode(b)
		if err != nil {
			return fmt.Errorf("ocppstation: %s: gateway sent %q: %w", action, b, err)
		}
		if f.Type == ocpp.TypeCall {
			if err := s.ws.WriteMessage(websocket.TextMessage,
				ocpp.EncodeCallError(f.ID, ocpp.NotImplemented, "this station takes no remote commands")); err != nil {
				return fmt.Errorf("ocppstation: %s: %w", action, err)
			}
			continue
		}
		if f.ID != id {
			return fmt.Errorf("ocppstation: %s: answer to %s, want %s", action, f.ID, id)
		}
		if f.Type == ocpp.TypeCallError {
			return &CallError{Action: action, Code: f.Code, Description: f.Description}
		}
		if err := s.schemas.Validate(action, ocpp.Response, f.Payload); err != nil {
			return fmt.Errorf("ocppstation: %s answer: %w", action, err)
		}
		if resp == nil {
			return nil
		}
		if err := json.Unmarshal(f.Payload, resp); err != nil {
			return fmt.Errorf("ocppstation: %s answer: %w", action, err)
		}
		return nil
	}
}

// ErrNotAccepted means the gateway answered with a status other than
// Accepted; the wrapped message has the status.
var ErrNotAccepted = errors.New("ocppstation: not accepted")

// The parts of the OCPP 2.0.1 messages the station builds and reads.
type (
	idToken struct {
		IDToken string `json:"idToken"`
		Type    string `json:"type"`
	}
	idTokenInfo struct {
		Status string `json:"status"`
	}
	tokenAnswer struct {
		IDTokenInfo *idTokenInfo `json:"idTokenInfo,omitempty"`
	}
	evse struct {
		ID          int `json:"id"`
		ConnectorID int `json:"connectorId"`
	}
	signedMeterValue struct {
		SignedMeterData string `json:"signedMeterData"`
		SigningMethod   string `json:"signingMethod"`
		EncodingMethod  string `json:"encodingMethod"`
		PublicKey       string `json:"publicKey"`
	}
	sampledValue struct {
		Value            json.Number       `json:"value"`
		Measurand        string            `json:"measurand"`
		SignedMeterValue *signedMeterValue `json:"signedMeterValue,omitempty"`
	}
	meterValue struct {
		Timestamp    string         `json:"timestamp"`
		SampledValue []sampledValue `json:"sampledValue"`
	}
	transactionInfo struct {
		TransactionID string `json:"transactionId"`
		StoppedReason string `json:"stoppedReason,omitempty"`
	}
	transactionEvent struct {
		EventType       string          `json:"eventType"`
		Timestamp       string          `json:"timestamp"`
		TriggerReason   string          `json:"triggerReason"`
		SeqNo           int             `json:"seqNo"`
		TransactionInfo transactionInfo `json:"transactionInfo"`
		Evse            *evse           `json:"evse,omitempty"`
		IDToken         *idToken        `json:"idToken,omitempty"`
		MeterValue      []meterValue    `json:"meterValue,omitempty"`
	}
)

// Reading is one signed meter value: the meter's OCMF message and the
// register it states, at the time it was taken.
type Reading struct {
	Time time.Time
	// Wh is the energy import register in Wh.
	Wh   string
	OCMF string
}

func meterValues(rs []Reading) []meterValue {
	out := make([]meterValue, 0, len(rs))
	for _, r := range rs {
		out = append(out, meterValue{Timestamp: r.Time.UTC().Format(time.RFC3339), SampledValue: []sampledValue{{
			Value: json.Number(r.Wh), Measurand: "Energy.Active.Import.Register",
			SignedMeterValue: &signedMeterValue{SignedMeterData: r.OCMF, SigningMethod: "ECDSA-secp256r1-SHA256", EncodingMethod: "OCMF"},
		}}})
	}
	return out
}

func accepted(action string, a tokenAnswer) error {
	if a.IDTokenInfo == nil || a.IDTokenInfo.Status != "Accepted" {
		status := "no idTokenInfo"
		if a.IDTokenInfo != nil {
			status = a.IDTokenInfo.Status
		}
		return fmt.Errorf("%w: %s: %s", ErrNotAccepted, action, status)
	}
	return nil
}

// Boot sends BootNotification (reason PowerUp) and then
// StatusNotification Occupied for connector 1 of evseID.
func (s *Station) Boot(ctx context.Context, model, vendor string, evseID int) error {
	var boot struct {
		Status string `json:"status"`
	}
	if err := s.Call(ctx, "BootNotification", map[string]any{
		"chargingStation": map[string]string{"model": model, "vendorName": vendor}, "reason": "PowerUp"}, &boot); err != nil {
		return err
	}
	if boot.Status != "Accepted" {
		return fmt.Errorf("%w: BootNotification: %s", ErrNotAccepted, boot.Status)
	}
	return s.Call(ctx, "StatusNotification", map[string]any{"timestamp": time.Now().UTC().Format(time.RFC3339),
		"connectorStatus": "Occupied", "evseId": evseID, "connectorId": 1}, nil)
}

// Authorize presents an ISO 14443 idToken; an answer other than Accepted
// wraps ErrNotAccepted.
func (s *Station) Authorize(ctx context.Context, token string) error {
	var a tokenAnswer
	if err := s.Call(ctx, "Authorize", map[string]any{"idToken": idToken{token, "ISO14443"}}, &a); err != nil {
		return err
	}
	return accepted("Authorize", a)
}

// Transaction is one transaction a Station runs on an EVSE.
type Transaction struct {
	s     *Station
	id    string
	evse  int
	seqNo int
}

// Start sends TransactionEvent Started for transaction id on evseID with
// the idToken and the begin reading. The gateway asks the payer for the
// session's hold before it answers; an answer other than Accepted wraps
// ErrNotAccepted.
func (s *Station) Start(ctx context.Context, id string, evseID int, token string, begin Reading) (*Transaction, error) {
	tx := &Transaction{s: s, id: id, evse: evseID}
	var a tokenAnswer
	if err := s.Call(ctx, "TransactionEvent", tx.event("Started", "Authorized", begin.Time, &idToken{token, "ISO14443"}, "", []Reading{begin}), &a); err != nil {
		return nil, err
	}
	return tx, accepted("TransactionEvent Started", a)
}

// Update sends readings in one TransactionEvent Updated (trigger
// MeterValuePeriodic).
func (t *Transaction) Update(ctx context.Context, readings []Reading) error {
	if len(readings) == 0 {
		return nil
	}
	return t.s.Call(ctx, "TransactionEvent", t.event("Updated", "MeterValuePeriodic", readings[len(readings)-1].Time, nil, "", readings), nil)
}

// End sends TransactionEvent Ended (the driver stopped at the station)
// with the end reading.
func (t *Transaction) End(ctx context.Context, end Reading) error {
	return t.s.Call(ctx, "TransactionEvent", t.event("Ended", "StopAuthorized", end.Time, nil, "Local", []Reading{end}), nil)
}

func (t *Transaction) event(kind, trigger string, at time.Time, tok *idToken, stopped string, rs []Reading) transactionEvent {
	e := transactionEvent{EventType: kind, Timestamp: at.UTC().Format(time.RFC3339), TriggerReason: trigger, SeqNo: t.seqNo,
		TransactionInfo: transactionInfo{TransactionID: t.id, StoppedReason: stopped},
		Evse:            &evse{ID: t.evse, ConnectorID: 1}, IDToken: tok, MeterValue: meterValues(rs)}
	t.seqNo++
	return e
}

// Meter is a calibrated meter for a Go station: it signs each reading as
// OCMF (ECDSA-secp256r1-SHA256) with its key, as an Eichrecht meter does.
type Meter struct {
	// Key is the meter's signing key (P-256).
	Key *ecdsa.PrivateKey
	// Serial is the meter's serial number (MS); Token the identification
	// it records for the session (ID, an ISO 14443 UID).
	Serial, Token string
}

// PublicKey is the meter's public key as OCPP and OCPI give it: base64
// DER (SubjectPublicKeyInfo).
func (m *Meter) PublicKey() (string, error) {
	der, err := x509.MarshalPKIXPublicKey(&m.Key.PublicKey)
	if err != nil {
		return "", fmt.Errorf("ocppstation: meter key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// Sign returns the meter's signed reading of kWh (the import register)
// at time at, as pagination page, placed in the transaction by tx (B
// begin, C charging, E end…; see ocmf.Reading).
func (m *Meter) Sign(page int, at time.Time, tx string, kWh decimal.Decimal) (Reading, error) {
	payload := fmt.Sprintf(`{"FV":"1.0","GI":"m2mhub ocppstation","PG":"T%d","MV":"m2mhub","MS":%q,"IS":true,"IT":"ISO14443","ID":%q,`+
		`"RD":[{"TM":"%s S","TX":%q,"RV":%s,"RI":"1-b:1.8.0","RU":"kWh","RT":"AC","EF":"","ST":"G"}]}`,
		page, m.Serial, m.Token, at.Format("2006-01-02T15:04:05,000-0700"), tx, kWh.StringFixed(3))
	sum := sha256.Sum256([]byte(payload))
	sig, err := ecdsa.SignASN1(rand.Reader, m.Key, sum[:])
	if err != nil {
		return Reading{}, fmt.Errorf("ocppstation: sign: %w", err)
	}
	return Reading{Time: at, Wh: kWh.Shift(3).String(),
		OCMF: `OCMF|` + payload + `|{"SA":"ECDSA-secp256r1-SHA256","SD":"` + hex.EncodeToString(sig) + `"}`}, nil
}

// SelfSigned makes a TLS certificate for a gateway on 127.0.0.1, valid
// for a day, and a pool that trusts it: for the demo and tests, whose
// stations connect over TLS as security profile 2 asks.
func SelfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "m2mhub ocppgw"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("ocppstation: certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("ocppstation: certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
