package ocmf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/contracts"
)

// The testdata messages were signed by OpenSSL 3 (`openssl dgst -sha256
// -sign`), a signer independent of this package, with one key per curve:
// <curve>-1.ocmf begins a transaction at 1234.5678 kWh, <curve>-2.ocmf
// ends it at 1255.0123 kWh.

func mustRead(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func mustKey(tb testing.TB, curve string) *PublicKey {
	tb.Helper()
	k, err := ParsePublicKey([]byte(mustRead(tb, curve+".pub.hex")))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func mustParse(tb testing.TB, s string) *Message {
	tb.Helper()
	m, err := Parse(s)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func TestVerify(t *testing.T) {
	for _, curve := range []string{"secp256r1", "secp384r1", "secp256k1"} {
		t.Run("OK/"+curve, func(t *testing.T) {
			k := mustKey(t, curve)
			for _, n := range []string{"1", "2"} {
				m := mustParse(t, mustRead(t, curve+"-"+n+".ocmf"))
				if err := m.Verify(k); err != nil {
					t.Fatalf("message %s: %v", n, err)
				}
			}
		})
		t.Run("ErrBadSignature/ForgedReading/"+curve, func(t *testing.T) {
			// One digit more energy: the payload still parses, the
			// signature no longer covers it.
			forged := strings.Replace(mustRead(t, curve+"-2.ocmf"), `"RV":1255.0123`, `"RV":1265.0123`, 1)
			m := mustParse(t, forged)
			if err := m.Verify(mustKey(t, curve)); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("forged reading: err = %v", err)
			}
		})
	}
	t.Run("ErrBadSignature/OtherMetersKey", func(t *testing.T) {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		other, err := ParsePublicKey(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := mustParse(t, mustRead(t, "secp256r1-1.ocmf")).Verify(other); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("ErrBadSignature/KeyOfAnotherCurve", func(t *testing.T) {
		if err := mustParse(t, mustRead(t, "secp256r1-1.ocmf")).Verify(mustKey(t, "secp384r1")); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("ErrBadSignature/SignatureOfAnotherMessage", func(t *testing.T) {
		a, b := mustRead(t, "secp256r1-1.ocmf"), mustRead(t, "secp256r1-2.ocmf")
		mixed := a[:strings.LastIndexByte(a, '|')] + b[strings.LastIndexByte(b, '|'):]
		if err := mustParse(t, mixed).Verify(mustKey(t, "secp256r1")); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("ErrUnsupported/Brainpool", func(t *testing.T) {
		if _, err := ParsePublicKey([]byte(mustRead(t, "brainpool256r1.pub.hex"))); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("key: err = %v", err)
		}
		m := mustParse(t, mustRead(t, "brainpool256r1-1.ocmf"))
		if err := m.Verify(mustKey(t, "secp256r1")); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("verify: err = %v", err)
		}
	})
	t.Run("OK/Base64Signature", func(t *testing.T) {
		// Sign here with SE base64: the same payload rules apply.
		priv, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		payload := `{"PG":"F7","IS":false,"RD":[{"TM":"2026-06-10T20:30:05,000+0000 R","TX":"C","RV":12,"RU":"Wh","ST":"G"}]}`
		sum := sha256.Sum256([]byte(payload))
		sig, err := ecdsa.SignASN1(rand.Reader, priv, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
		k, err := ParsePublicKey([]byte(hex.EncodeToString(der)))
		if err != nil {
			t.Fatal(err)
		}
		m := mustParse(t, `OCMF|`+payload+`|{"SA":"ECDSA-secp384r1-SHA256","SE":"base64","SM":"application/x-der","SD":"`+b64(sig)+`"}`)
		if err := m.Verify(k); err != nil {
			t.Fatal(err)
		}
	})
}

func TestParseRefused(t *testing.T) {
	good := mustRead(t, "secp256r1-1.ocmf")
	payload, sig := good[5:strings.LastIndexByte(good, '|')], good[strings.LastIndexByte(good, '|')+1:]
	tests := []struct {
		name string
		msg  string
		want error
	}{
		{"NoPrefix", strings.TrimPrefix(good, "OCMF|"), ErrMalformed},
		{"NoSignature", "OCMF|" + payload, ErrMalformed},
		{"PayloadNotJSON", "OCMF|{oops|" + sig, ErrMalformed},
		{"NoReadings", `OCMF|{"PG":"T1","RD":[]}|` + sig, ErrMalformed},
		{"BadTime", "OCMF|" + strings.Replace(payload, ",000+0200 S", " S", 1) + "|" + sig, ErrMalformed},
		{"BadTimeStatus", "OCMF|" + strings.Replace(payload, "+0200 S", "+0200 Q", 1) + "|" + sig, ErrMalformed},
		{"ValueNotNumber", "OCMF|" + strings.Replace(payload, `"RV":1234.5678`, `"RV":"lots"`, 1) + "|" + sig, ErrMalformed},
		{"TrailingPayload", "OCMF|" + payload + "{}|" + sig, ErrMalformed},
		{"SignatureNotHex", "OCMF|" + payload + `|{"SD":"zz"}`, ErrMalformed},
		{"BadEncoding", "OCMF|" + payload + `|{"SE":"rot13","SD":"00"}`, ErrMalformed},
		{"UnknownAlgorithm", "OCMF|" + payload + `|{"SA":"RSA-4096","SD":"00"}`, ErrUnsupported},
		{"TooLarge", "OCMF|" + strings.Repeat(" ", MaxSize) + payload + "|" + sig, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(tt.msg); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestBilledReadings prices a session from its two signed readings and
// checks that the event id binds exactly those readings.
func TestBilledReadings(t *testing.T) {
	k := mustKey(t, "secp256r1")
	raw := []string{mustRead(t, "secp256r1-1.ocmf"), mustRead(t, "secp256r1-2.ocmf")}
	var msgs []*Message
	for _, r := range raw {
		m := mustParse(t, r)
		if err := m.Verify(k); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	mvs, err := MeterValues(msgs)
	if err != nil {
		t.Fatal(err)
	}
	u, err := contracts.UsageFromMeterValues(contracts.Usage{Device: "car-1", Provider: "cp-1"}, mvs)
	if err != nil {
		t.Fatal(err)
	}
	// 1255.0123 − 1234.5678 = 20.4445 kWh, charging from 20:30:05 to
	// 22:40:10 local (+02:00).
	if len(u.Periods) != 1 || u.Periods[0].EnergyKWh.String() != "20.4445" || u.Periods[0].State != contracts.StateCharging ||
		!u.Start.Equal(time.Date(2026, 6, 10, 18, 30, 5, 0, time.UTC)) || !u.End.Equal(time.Date(2026, 6, 10, 20, 40, 10, 0, time.UTC)) {
		t.Fatalf("usage %+v", u)
	}
	id := EventID(msgs)
	if len(id) > 64 || !strings.HasPrefix(id, "ocmf-") {
		t.Fatalf("event id %q does not fit a usage event id", id)
	}
	if !BindsReadings(id, raw) {
		t.Fatal("event id does not bind its readings")
	}
	if BindsReadings(id, raw[:1]) || BindsReadings(id, []string{raw[1], raw[0]}) {
		t.Fatal("event id binds other readings")
	}

	// The session's CDR carries the readings as OCPI signed_data.
	der, err := hex.DecodeString(mustRead(t, "secp256r1.pub.hex"))
	if err != nil {
		t.Fatal(err)
	}
	sd := SignedData(msgs, b64(der))
	if _, err := ParsePublicKey([]byte(sd.PublicKey)); err != nil {
		t.Fatalf("public key in signed data: %v", err)
	}
	if sd.EncodingMethod != "OCMF" || len(sd.SignedValues) != 2 || sd.SignedValues[0].Nature != "Start" || sd.SignedValues[1].Nature != "End" ||
		sd.SignedValues[1].PlainData != string(msgs[1].Payload) || sd.SignedValues[1].SignedData != b64([]byte(raw[1])) {
		t.Fatalf("signed data %+v", sd)
	}

	// Readings the law does not let be billed.
	for name, edit := range map[string]func(r *Reading){
		"ErrorFlag":   func(r *Reading) { r.ErrorFlags = "E" },
		"NotGood":     func(r *Reading) { r.Status = "T" },
		"ClockUnsync": func(r *Reading) { r.TimeStatus = "U" },
		"OtherOBIS":   func(r *Reading) { r.ID = "1-b:2.8.0" },
		"OtherUnit":   func(r *Reading) { r.Unit = "varh" },
	} {
		t.Run("ErrMalformed/"+name, func(t *testing.T) {
			m := *msgs[1]
			m.Data.Readings = append([]Reading(nil), m.Data.Readings...)
			edit(&m.Data.Readings[0])
			if _, err := MeterValues([]*Message{msgs[0], &m}); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
