package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/m2mhub/m2mhub/metering/ocmf"
)

// fileConfig is the gateway's station and token file (see
// docs/ev-charging.md, "Connect your chargers").
type fileConfig struct {
	// Stations maps a charging station identity to its credentials.
	Stations map[string]stationConfig `json:"stations"`
	// Tokens maps an OCPP idToken to the payer device id it stands for.
	Tokens map[string]string `json:"tokens"`
}

type stationConfig struct {
	// Password is the station's basic-auth password (security profile 2).
	Password string `json:"password"`
	// MeterPublicKey is the calibrated meter's public key, base64 DER
	// (SubjectPublicKeyInfo), as OCPP's signedMeterValue.publicKey gives it.
	MeterPublicKey string `json:"meter_public_key"`
}

// loaded is fileConfig checked and decoded.
type loaded struct {
	passwords map[string]string
	meterKeys map[string]*ocmf.PublicKey
	tokens    map[string]string
}

// errConfig is wrapped by every error in the station file.
var errConfig = errors.New("ocppgw: config")

func loadConfig(path string) (*loaded, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	return parseConfig(b)
}

func parseConfig(b []byte) (*loaded, error) {
	var fc fileConfig
	if err := json.Unmarshal(b, &fc); err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	if len(fc.Stations) == 0 {
		return nil, fmt.Errorf("%w: no stations", errConfig)
	}
	l := &loaded{passwords: map[string]string{}, meterKeys: map[string]*ocmf.PublicKey{}, tokens: fc.Tokens}
	for id, s := range fc.Stations {
		// OCPP 2.0.1 A00.FR.205: the basic-auth password is 16 to 40 characters.
		if id == "" || len(s.Password) < 16 || len(s.Password) > 40 {
			return nil, fmt.Errorf("%w: station %q needs a password of 16 to 40 characters", errConfig, id)
		}
		l.passwords[id] = s.Password
		der, err := base64.StdEncoding.DecodeString(s.MeterPublicKey)
		if err != nil {
			return nil, fmt.Errorf("%w: station %q meter key: %w", errConfig, id, err)
		}
		pub, err := ocmf.ParsePublicKey(der)
		if err != nil {
			return nil, fmt.Errorf("%w: station %q meter key: %w", errConfig, id, err)
		}
		l.meterKeys[id] = pub
	}
	for tok, payer := range fc.Tokens {
		if tok == "" || payer == "" {
			return nil, fmt.Errorf("%w: empty idToken or payer", errConfig)
		}
	}
	return l, nil
}
