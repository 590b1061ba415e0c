package channel

import (
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// KeySpendSigHash returns the BIP341 key-path signature hash of input idx of
// tx under hashType; both parties compute it from the transaction they agree
// to before signing. A cooperative settlement uses ClaimHashType, so every
// participant signs only its own input and output. prevOuts must know every
// input of tx; sigHashes may be nil.
func KeySpendSigHash(tx *wire.MsgTx, idx int, prevOuts txscript.PrevOutputFetcher,
	sigHashes *txscript.TxSigHashes, hashType txscript.SigHashType) ([32]byte, error) {

	if idx < 0 || idx >= len(tx.TxIn) {
		return [32]byte{}, fmt.Errorf("channel: input %d of %d", idx, len(tx.TxIn))
	}
	if sigHashes == nil {
		sigHashes = txscript.NewTxSigHashes(tx, prevOuts)
	}
	h, err := txscript.CalcTaprootSignatureHash(sigHashes, hashType, tx, idx, prevOuts)
	if err != nil {
		return [32]byte{}, fmt.Errorf("channel: key spend sighash: %w", err)
	}
	var out [32]byte
	copy(out[:], h)
	return out, nil
}

// KeySpendWitness assembles the key-path witness from the combined MuSig2
// signature: the 64-byte signature, followed by the hashType byte unless it
// is SigHashDefault.
func KeySpendWitness(sig *schnorr.Signature, hashType txscript.SigHashType) wire.TxWitness {
	raw := sig.Serialize()
	if hashType != txscript.SigHashDefault {
		raw = append(raw, byte(hashType))
	}
	return wire.TxWitness{raw}
}

// KeySession is one party's half of a single MuSig2 (BIP327) signature on
// the channel's key path. The flow for each party is: NewKeySession, send
// PublicNonce, Sign with the peer's nonce, send the partial signature,
// Combine with the peer's. A session signs once; a second Sign would reuse
// its nonce and leak the key, so it is refused. A KeySession is not safe
// for concurrent use.
type KeySession struct {
	out     *Output
	key     *btcec.PrivateKey
	peerKey *btcec.PublicKey

	// nonces holds the secret nonce until Sign consumes it; pubNonce
	// outlives it.
	nonces   *musig2.Nonces
	pubNonce [musig2.PubNonceSize]byte

	// Set by Sign, needed by Combine.
	peerNonce     [musig2.PubNonceSize]byte
	combinedNonce [musig2.PubNonceSize]byte
	msg           [32]byte
	ourSig        *musig2.PartialSignature
	combined      bool
}

// NewKeySession starts a signing session for key, which must be the device
// or the hub key, with a fresh nonce drawn from crypto/rand (mixed, as
// BIP327 recommends, with the key and the output key). It returns an error
// wrapping ErrNotParticipant.
func (o *Output) NewKeySession(key *btcec.PrivateKey) (*KeySession, error) {
	pub := key.PubKey()
	var peer *btcec.PublicKey
	switch {
	case pub.IsEqual(o.params.DeviceKey):
		peer = o.params.HubKey
	case pub.IsEqual(o.params.HubKey):
		peer = o.params.DeviceKey
	default:
		return nil, fmt.Errorf("%w: key signs neither side", ErrNotParticipant)
	}
	nonces, err := musig2.GenNonces(
		musig2.WithPublicKey(pub),
		musig2.WithNonceSecretKeyAux(key),
		musig2.WithNonceCombinedKeyAux(o.outputKey),
	)
	if err != nil {
		return nil, fmt.Errorf("channel: musig2 nonce: %w", err)
	}
	return &KeySession{
		out: o, key: key, peerKey: peer, nonces: nonces, pubNonce: nonces.PubNonce,
	}, nil
}

// PublicNonce returns this party's public nonce, to send to the peer before
// either signs.
func (s *KeySession) PublicNonce() [musig2.PubNonceSize]byte {
	return s.pubNonce
}

// Sign makes this party's partial signature of sigHash for the taproot
// tweaked key path, given the peer's public nonce. It returns an error
// wrapping ErrSessionState when called a second time.
func (s *KeySession) Sign(sigHash [32]byte, peerNonce [musig2.PubNonceSize]byte) (*musig2.PartialSignature, error) {
	if s.nonces == nil {
		return nil, fmt.Errorf("%w: session already signed", ErrSessionState)
	}
	combined, err := musig2.AggregateNonces([][musig2.PubNonceSize]byte{s.pubNonce, peerNonce})
	if err != nil {
		return nil, fmt.Errorf("channel: musig2 nonces: %w", err)
	}
	secNonce := s.nonces.SecNonce
	// Forget the secret nonce before signing, so no error path can leave
	// it around for a second use.
	s.nonces = nil
	// WithFastSign skips musig2's self-check of the partial signature:
	// Combine verifies the final signature against the output key, and the
	// peer verifies ours, so the check would only double the cost of a
	// settlement round.
	sig, err := musig2.Sign(secNonce, s.key, combined, s.out.musigKeys, sigHash,
		musig2.WithSortedKeys(), musig2.WithTaprootSignTweak(s.out.rootHash), musig2.WithFastSign())
	if err != nil {
		return nil, fmt.Errorf("channel: musig2 sign: %w", err)
	}
	s.peerNonce = peerNonce
	s.combinedNonce = combined
	s.msg = sigHash
	s.ourSig = sig
	return sig, nil
}

// Combine checks the peer's partial signature and combines it with this
// party's into the final key-path signature, itself checked against the
// output key. It returns an error wrapping ErrBadSignature when the peer's
// partial signature is invalid (the peer is to blame), or ErrSessionState
// when called before Sign or twice.
func (s *KeySession) Combine(peerSig *musig2.PartialSignature) (*schnorr.Signature, error) {
	switch {
	case s.ourSig == nil:
		return nil, fmt.Errorf("%w: combine before sign", ErrSessionState)
	case s.combined:
		return nil, fmt.Errorf("%w: session already combined", ErrSessionState)
	case peerSig == nil || peerSig.S == nil:
		// musig2 dereferences S unchecked.
		return nil, fmt.Errorf("%w: no partial signature", ErrBadSignature)
	}
	if !peerSig.Verify(s.peerNonce, s.combinedNonce, s.out.musigKeys, s.peerKey, s.msg,
		musig2.WithSortedKeys(), musig2.WithTaprootSignTweak(s.out.rootHash)) {
		return nil, fmt.Errorf("%w: peer partial signature", ErrBadSignature)
	}
	final := musig2.CombineSigs(s.ourSig.R, []*musig2.PartialSignature{s.ourSig, peerSig},
		musig2.WithTaprootTweakedCombine(s.msg, s.out.musigKeys, s.out.rootHash, true))
	if !final.Verify(s.msg[:], s.out.outputKey) {
		return nil, fmt.Errorf("%w: combined signature", ErrBadSignature)
	}
	s.combined = true
	return final, nil
}
