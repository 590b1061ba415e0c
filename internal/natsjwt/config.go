package natsjwt

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ServerConfig is the part of a nats-server config (every node of a
// cluster gets the same) that makes it trust the authority: the operator
// JWT, the system account, a full account resolver storing account JWTs
// in resolverDir (updates pushed on $SYS.REQ.CLAIMS.UPDATE are stored
// there and spread to the other nodes), preloaded with the system and hub
// accounts. Include it from the server's config file.
func (a *Authority) ServerConfig(resolverDir string) (string, error) {
	op, err := a.OperatorJWT()
	if err != nil {
		return "", err
	}
	sys, err := a.SystemAccountJWT()
	if err != nil {
		return "", err
	}
	acc, err := a.AccountJWT(nil)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# m2mhub NATS authority (internal/natsjwt): trust the hub's operator.\n")
	fmt.Fprintf(&b, "operator: %s\n", op)
	fmt.Fprintf(&b, "system_account: %s\n", a.sysPub)
	fmt.Fprintf(&b, "resolver: {\n  type: full\n  dir: %s\n  allow_delete: false\n  interval: \"2m\"\n}\n", strconv.Quote(resolverDir))
	fmt.Fprintf(&b, "resolver_preload: {\n  %s: %s\n  %s: %s\n}\n", a.sysPub, sys, a.accPub, acc)
	return b.String(), nil
}

// SaveSeeds writes s to a new file at path, mode 0600; an existing file is
// an error (the seeds are the hub's NATS identity, created once).
func SaveSeeds(path string, s Seeds) error {
	b, err := json.MarshalIndent(seedsFile{
		Operator: string(s.Operator), System: string(s.System), Account: string(s.Account), Signing: string(s.Signing),
	}, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("natsjwt: seeds: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("natsjwt: seeds: %w", err)
	}
	return nil
}

// LoadSeeds reads the seeds at path; fs.ErrNotExist when there are none.
// A file readable by others is refused.
func LoadSeeds(path string) (Seeds, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Seeds{}, fmt.Errorf("natsjwt: seeds: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return Seeds{}, fmt.Errorf("natsjwt: %s is readable by others; chmod 600 it", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Seeds{}, fmt.Errorf("natsjwt: seeds: %w", err)
	}
	var f seedsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return Seeds{}, fmt.Errorf("natsjwt: seeds %s: %w", path, err)
	}
	if f.Operator == "" || f.System == "" || f.Account == "" || f.Signing == "" {
		return Seeds{}, fmt.Errorf("natsjwt: seeds %s: %w", path, errors.New("a seed is missing"))
	}
	return Seeds{Operator: []byte(f.Operator), System: []byte(f.System), Account: []byte(f.Account), Signing: []byte(f.Signing)}, nil
}

type seedsFile struct {
	Operator string `json:"operator"`
	System   string `json:"system"`
	Account  string `json:"account"`
	Signing  string `json:"signing"`
}
