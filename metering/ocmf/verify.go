package ocmf

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"
)

// PublicKey is a meter's public key, as its SubjectPublicKeyInfo names it.
type PublicKey struct {
	// Algorithm is the OCMF signature algorithm this key checks.
	Algorithm string
	der       []byte
	std       *ecdsa.PublicKey
	k1        *btcec.PublicKey
}

// Base64 is the key as OCPP's signedMeterValue.publicKey and OCPI's
// SignedData.public_key give it: its DER SubjectPublicKeyInfo in base64.
func (k *PublicKey) Base64() string { return base64.StdEncoding.EncodeToString(k.der) }

// Named curves of an EC SubjectPublicKeyInfo, by OID, with the OCMF
// algorithm that uses each.
var curveOIDs = []struct {
	oid asn1.ObjectIdentifier
	alg string
}{
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}, AlgSecp256r1},
	{asn1.ObjectIdentifier{1, 3, 132, 0, 34}, AlgSecp384r1},
	{asn1.ObjectIdentifier{1, 3, 132, 0, 10}, AlgSecp256k1},
	{asn1.ObjectIdentifier{1, 3, 132, 0, 31}, AlgSecp192k1},
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 1}, AlgSecp192r1},
	{asn1.ObjectIdentifier{1, 3, 36, 3, 3, 2, 8, 1, 1, 7}, AlgBrainpool256r1},
	{asn1.ObjectIdentifier{1, 3, 36, 3, 3, 2, 8, 1, 1, 11}, AlgBrainpool384r1},
}

var oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}

// ParsePublicKey reads a meter key: a DER SubjectPublicKeyInfo, as raw
// bytes or as hex or base64 text (OCMF tools show hex, OCPP 2.0.1's
// publicKey is base64). Errors wrap ErrMalformed, or ErrUnsupported for a
// curve this package cannot check.
func ParsePublicKey(b []byte) (*PublicKey, error) {
	der := b
	if s := strings.TrimSpace(string(b)); len(b) > 0 && b[0] != 0x30 {
		var err error
		if der, err = hex.DecodeString(s); err != nil {
			if der, err = base64.StdEncoding.DecodeString(s); err != nil {
				return nil, fmt.Errorf("%w: public key is not DER, hex or base64", ErrMalformed)
			}
		}
	}
	var spki struct {
		Algo struct {
			OID   asn1.ObjectIdentifier
			Curve asn1.ObjectIdentifier
		}
		Key asn1.BitString
	}
	if rest, err := asn1.Unmarshal(der, &spki); err != nil || len(rest) > 0 || !spki.Algo.OID.Equal(oidECPublicKey) {
		return nil, fmt.Errorf("%w: public key is not an EC SubjectPublicKeyInfo", ErrMalformed)
	}
	k := &PublicKey{der: der}
	for _, c := range curveOIDs {
		if c.oid.Equal(spki.Algo.Curve) {
			k.Algorithm = c.alg
		}
	}
	var err error
	switch k.Algorithm {
	case AlgSecp256r1, AlgSecp384r1:
		var pub any
		if pub, err = x509.ParsePKIXPublicKey(der); err == nil {
			k.std, _ = pub.(*ecdsa.PublicKey)
		}
	case AlgSecp256k1:
		k.k1, err = btcec.ParsePubKey(spki.Key.RightAlign())
	case "":
		return nil, fmt.Errorf("%w: curve %v", ErrUnsupported, spki.Algo.Curve)
	default:
		return nil, fmt.Errorf("%w: %s (no implementation in Go's standard library or btcec)", ErrUnsupported, k.Algorithm)
	}
	if err != nil || (k.std == nil && k.k1 == nil) {
		return nil, fmt.Errorf("%w: public key: %v", ErrMalformed, err)
	}
	return k, nil
}

// Verify checks the meter's signature over the payload. Errors wrap
// ErrBadSignature (altered, forged, or another meter's key, including a
// key of another curve than the message names) or ErrUnsupported.
func (m *Message) Verify(pub *PublicKey) error {
	switch m.Sig.Algorithm {
	case AlgSecp256r1, AlgSecp384r1, AlgSecp256k1:
	default:
		return fmt.Errorf("%w: %s (no implementation in Go's standard library or btcec)", ErrUnsupported, m.Sig.Algorithm)
	}
	if pub == nil || pub.Algorithm != m.Sig.Algorithm {
		return fmt.Errorf("%w: the message is signed with %s, the meter key is not", ErrBadSignature, m.Sig.Algorithm)
	}
	// OCMF hashes with SHA-256 on every curve.
	digest := sha256.Sum256(m.Payload)
	ok := false
	if pub.std != nil {
		ok = ecdsa.VerifyASN1(pub.std, digest[:], m.sig)
	} else if sig, err := btcecdsa.ParseDERSignature(m.sig); err == nil {
		ok = sig.Verify(digest[:], pub.k1)
	}
	if !ok {
		return ErrBadSignature
	}
	return nil
}
