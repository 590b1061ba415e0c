package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
)

func TestParseConfig(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := base64.StdEncoding.EncodeToString(der)
	doc := func(pw, key, tokens string) []byte {
		return fmt.Appendf(nil, `{"stations":{"CS1":{"password":%q,"meter_public_key":%q}},"tokens":%s}`, pw, key, tokens)
	}
	t.Run("OK", func(t *testing.T) {
		l, err := parseConfig(doc("0123456789abcdef", pub, `{"1F2D3A4B":"car-1"}`))
		if err != nil {
			t.Fatal(err)
		}
		if l.passwords["CS1"] != "0123456789abcdef" || l.meterKeys["CS1"] == nil || l.tokens["1F2D3A4B"] != "car-1" {
			t.Fatalf("loaded %+v", l)
		}
	})
	for name, b := range map[string][]byte{
		"ErrConfig/ShortPassword": doc("short", pub, `{}`),
		"ErrConfig/BadMeterKey":   doc("0123456789abcdef", "bm90IGEga2V5", `{}`),
		"ErrConfig/EmptyPayer":    doc("0123456789abcdef", pub, `{"1F2D3A4B":""}`),
		"ErrConfig/NoStations":    []byte(`{"stations":{}}`),
		"ErrConfig/NotJSON":       []byte(`{`),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseConfig(b); !errors.Is(err, errConfig) {
				t.Fatalf("err %v, want errConfig", err)
			}
		})
	}
}
