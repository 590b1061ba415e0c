// Package natsjwt is the hub's side of NATS decentralised authentication:
// an operator, a system account and the hub's account, as JWTs signed
// with nkeys (github.com/nats-io/jwt/v2), and provider users signed by
// the hub account's signing key. A NATS server or cluster configured with
// the operator JWT and a full (or memory) account resolver trusts every
// user the hub signs, so issuing a provider's credentials needs no edit of
// the server config, embedded or external; revoking one is an account JWT
// update carrying the revocation, pushed to the cluster on
// $SYS.REQ.CLAIMS.UPDATE (Push), which the resolver stores and every
// server applies by closing the user's connections.
//
// A provider user may do what natsembed.ProviderPermissions allows and
// nothing more (publish its usage, read its receipts); its JWT carries
// those permissions, so the rule stays in one place.
//
// hubd uses it with an external NATS when given --nats-authority; the
// embedded server still has nkey users (internal/natsembed).
package natsjwt

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/m2mhub/m2mhub/internal/natsembed"
	"github.com/m2mhub/m2mhub/metering"
)

// Seeds are the authority's private keys, as nkey seeds. The operator
// and account identity keys sign rarely (new account JWTs); the signing
// key signs users and can be rotated without changing the account.
type Seeds struct {
	Operator, System, Account, Signing []byte
}

// Authority issues the JWTs.
type Authority struct {
	operator, system, account, signing nkeys.KeyPair
	opPub, sysPub, accPub, signPub     string
}

// NewSeeds creates fresh keys.
func NewSeeds() (Seeds, error) {
	var s Seeds
	for _, k := range []struct {
		dst *[]byte
		mk  func() (nkeys.KeyPair, error)
	}{{&s.Operator, nkeys.CreateOperator}, {&s.System, nkeys.CreateAccount}, {&s.Account, nkeys.CreateAccount}, {&s.Signing, nkeys.CreateAccount}} {
		kp, err := k.mk()
		if err != nil {
			return Seeds{}, fmt.Errorf("natsjwt: new key: %w", err)
		}
		if *k.dst, err = kp.Seed(); err != nil {
			return Seeds{}, fmt.Errorf("natsjwt: new key: %w", err)
		}
	}
	return s, nil
}

// New loads the authority from its seeds.
func New(s Seeds) (*Authority, error) {
	a := &Authority{}
	for _, k := range []struct {
		seed   []byte
		kp     *nkeys.KeyPair
		pub    *string
		prefix nkeys.PrefixByte
	}{
		{s.Operator, &a.operator, &a.opPub, nkeys.PrefixByteOperator},
		{s.System, &a.system, &a.sysPub, nkeys.PrefixByteAccount},
		{s.Account, &a.account, &a.accPub, nkeys.PrefixByteAccount},
		{s.Signing, &a.signing, &a.signPub, nkeys.PrefixByteAccount},
	} {
		kp, err := nkeys.FromSeed(k.seed)
		if err != nil {
			return nil, fmt.Errorf("natsjwt: seed: %w", err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("natsjwt: seed: %w", err)
		}
		if !nkeys.IsValidPublicKey(pub) || nkeys.Prefix(pub) != k.prefix {
			return nil, fmt.Errorf("natsjwt: seed of %s is not of the expected kind", pub)
		}
		*k.kp, *k.pub = kp, pub
	}
	return a, nil
}

// OperatorPublicKey, SystemAccount and Account name the authority's keys.
func (a *Authority) OperatorPublicKey() string { return a.opPub }

// SystemAccount is the system account's public key.
func (a *Authority) SystemAccount() string { return a.sysPub }

// Account is the hub account's public key (providers' users are in it).
func (a *Authority) Account() string { return a.accPub }

// OperatorJWT is the operator JWT the servers trust (operator: in their
// config), naming the system account.
func (a *Authority) OperatorJWT() (string, error) {
	c := jwt.NewOperatorClaims(a.opPub)
	c.Name = "m2mhub"
	c.SystemAccount = a.sysPub
	s, err := c.Encode(a.operator)
	if err != nil {
		return "", fmt.Errorf("natsjwt: operator jwt: %w", err)
	}
	return s, nil
}

// SystemAccountJWT is the system account's JWT.
func (a *Authority) SystemAccountJWT() (string, error) {
	c := jwt.NewAccountClaims(a.sysPub)
	c.Name = "SYS"
	s, err := c.Encode(a.operator)
	if err != nil {
		return "", fmt.Errorf("natsjwt: system account jwt: %w", err)
	}
	return s, nil
}

// AccountJWT is the hub account's JWT: JetStream enabled without limits,
// the signing key trusted for users, and revoked user keys (each revoking
// the user's JWTs issued at or before its time).
func (a *Authority) AccountJWT(revoked map[string]time.Time) (string, error) {
	c := jwt.NewAccountClaims(a.accPub)
	c.Name = "m2mhub"
	c.SigningKeys.Add(a.signPub)
	c.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit}
	for pub, at := range revoked {
		c.RevokeAt(pub, at)
	}
	s, err := c.Encode(a.operator)
	if err != nil {
		return "", fmt.Errorf("natsjwt: account jwt: %w", err)
	}
	return s, nil
}

// User is an issued user: its public key (to revoke it) and its
// credentials file (JWT and seed), handed over once.
type User struct {
	PublicKey string
	JWT       string
	Seed      []byte
	Creds     []byte
}

// HubUser issues a user of the hub account with every right, for hubd.
func (a *Authority) HubUser(name string) (User, error) {
	return a.user(name, nil)
}

// SystemUser issues a system account user, for Push.
func (a *Authority) SystemUser() (User, error) {
	return newUser(a.system, "", "hub-sys", nil)
}

// ProviderKey is provider id's user public key. It is derived from the
// signing key and the id (HMAC-SHA256), so every instance that holds the
// authority's seeds names the same key for a provider without sharing a
// list, and revoking the key at t revokes every credential issued for the
// provider until t while one issued later is valid.
func (a *Authority) ProviderKey(id string) (string, error) {
	kp, err := a.providerKeyPair(id)
	if err != nil {
		return "", err
	}
	return kp.PublicKey()
}

func (a *Authority) providerKeyPair(id string) (nkeys.KeyPair, error) {
	if !metering.ValidSubjectToken(id) {
		return nil, fmt.Errorf("natsjwt: provider id %q cannot be a subject token", id)
	}
	seed, err := a.signing.Seed()
	if err != nil {
		return nil, fmt.Errorf("natsjwt: signing seed: %w", err)
	}
	m := hmac.New(sha256.New, seed)
	m.Write([]byte("m2mhub nats provider user\x00" + id))
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, m.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("natsjwt: provider key: %w", err)
	}
	return kp, nil
}

// ProviderUser issues provider id's user (key ProviderKey(id)), signed by
// the account's signing key, with natsembed.ProviderPermissions(id) and
// nothing else.
func (a *Authority) ProviderUser(id string) (User, error) {
	kp, err := a.providerKeyPair(id)
	if err != nil {
		return User{}, err
	}
	sp := natsembed.ProviderPermissions(id)
	p := &jwt.Permissions{}
	p.Pub.Allow.Add(sp.Publish.Allow...)
	p.Sub.Allow.Add(sp.Subscribe.Allow...)
	return signUser(a.signing, a.accPub, kp, "provider-"+id, p)
}

// RevokeProviders revokes every credential issued so far to the providers
// ids: it reads the account JWT the cluster holds (so revocations pushed
// by another instance are kept), adds the providers' keys revoked at now,
// and pushes the result over sys (a system account connection).
func (a *Authority) RevokeProviders(ctx context.Context, sys *nats.Conn, now time.Time, ids ...string) error {
	revoked := map[string]time.Time{}
	msg, err := sys.RequestWithContext(ctx, fmt.Sprintf("$SYS.REQ.ACCOUNT.%s.CLAIMS.LOOKUP", a.accPub), nil)
	if err != nil {
		return fmt.Errorf("natsjwt: look up account jwt: %w", err)
	}
	if cur, err := jwt.DecodeAccountClaims(string(msg.Data)); err == nil && cur.Subject == a.accPub {
		for pub, at := range cur.Revocations {
			revoked[pub] = time.Unix(at, 0)
		}
	} else if err == nil {
		return fmt.Errorf("natsjwt: look up account jwt: answer is for %s", cur.Subject)
	}
	// An account JWT that cannot be decoded: the resolver does not have
	// one yet (or answered an error); start from none.
	for _, id := range ids {
		pub, err := a.ProviderKey(id)
		if err != nil {
			return err
		}
		revoked[pub] = now
	}
	accJWT, err := a.AccountJWT(revoked)
	if err != nil {
		return err
	}
	return Push(ctx, sys, accJWT)
}

func (a *Authority) user(name string, perms *jwt.Permissions) (User, error) {
	return newUser(a.signing, a.accPub, name, perms)
}

// newUser issues a user with a new key pair; see signUser.
func newUser(signer nkeys.KeyPair, issuerAccount, name string, perms *jwt.Permissions) (User, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return User{}, fmt.Errorf("natsjwt: new user: %w", err)
	}
	return signUser(signer, issuerAccount, kp, name, perms)
}

// signUser issues user kp's JWT and credentials, signed by signer (an
// account key, or a signing key of issuerAccount when that is not empty).
func signUser(signer nkeys.KeyPair, issuerAccount string, kp nkeys.KeyPair, name string, perms *jwt.Permissions) (User, error) {
	pub, _ := kp.PublicKey()
	c := jwt.NewUserClaims(pub)
	c.Name = name
	c.IssuerAccount = issuerAccount
	if perms != nil {
		c.Permissions = *perms
	}
	tok, err := c.Encode(signer)
	if err != nil {
		return User{}, fmt.Errorf("natsjwt: user jwt: %w", err)
	}
	seed, _ := kp.Seed()
	creds, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		return User{}, fmt.Errorf("natsjwt: creds: %w", err)
	}
	return User{PublicKey: pub, JWT: tok, Seed: seed, Creds: creds}, nil
}

// Push sends an account JWT to the cluster on $SYS.REQ.CLAIMS.UPDATE over
// sys, a connection of a system account user, and waits for a server's
// answer: a full resolver stores it and the servers apply it (a
// revocation closes the revoked users' connections).
func Push(ctx context.Context, sys *nats.Conn, accountJWT string) error {
	msg, err := sys.RequestWithContext(ctx, "$SYS.REQ.CLAIMS.UPDATE", []byte(accountJWT))
	if err != nil {
		return fmt.Errorf("natsjwt: push account jwt: %w", err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("natsjwt: push account jwt: answer %q: %w", msg.Data, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("natsjwt: push account jwt: %w", errors.New(resp.Error.Description))
	}
	return nil
}
