package redisstore

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/m2mhub/m2mhub/hub"
)

// Contract keys, under the prefix: contracts (hash: hash hex -> record
// JSON) and contractord (sorted set of hash hex scored by the publication
// time in unix milliseconds, exact as a double).

//go:embed putcontract.lua
var putContractSource string

// The metering scripts. A redis.Script holds only its source and hash and
// is never changed after it is made, so sharing these is sharing
// constants. Store.New does not preload them (it loads the channel
// store's); the first Run of each loads it with EVAL.
var (
	putContractScript  = redis.NewScript(putContractSource)
	chargesScript      = redis.NewScript(chargesSource)
	chargeStatusScript = redis.NewScript(chargeStatusSource)
	chargePaidScript   = redis.NewScript(chargePaidSource)
)

var _ hub.ContractStore = (*Store)(nil)

func (s *Store) contractsKey() string     { return s.prefix + "contracts" }
func (s *Store) contractOrderKey() string { return s.prefix + "contractord" }

// PutContract stores c under its hash; storing a hash that is already
// there is a no-op, since a contract never changes once published.
func (s *Store) PutContract(ctx context.Context, c hub.ContractRecord) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("redisstore: %w", err)
	}
	doc, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("redisstore: encode contract %s: %w", c.Hash, err)
	}
	err = putContractScript.Run(ctx, s.rdb, []string{s.contractsKey(), s.contractOrderKey()},
		c.Hash.String(), doc, c.Published.UnixMilli()).Err()
	if err != nil {
		return fmt.Errorf("redisstore: put contract %s: %w", c.Hash, err)
	}
	return nil
}

// Contract returns the contract with hash h, or hub.ErrNotFound.
func (s *Store) Contract(ctx context.Context, h hub.Hash) (hub.ContractRecord, error) {
	doc, err := s.rdb.HGet(ctx, s.contractsKey(), h.String()).Bytes()
	if errors.Is(err, redis.Nil) {
		return hub.ContractRecord{}, fmt.Errorf("%w: contract %s", hub.ErrNotFound, h)
	}
	if err != nil {
		return hub.ContractRecord{}, fmt.Errorf("redisstore: contract %s: %w", h, err)
	}
	return decodeContract(h.String(), doc)
}

func decodeContract(h string, doc []byte) (hub.ContractRecord, error) {
	var c hub.ContractRecord
	if err := json.Unmarshal(doc, &c); err != nil {
		return c, fmt.Errorf("redisstore: decode contract %s: %w", h, err)
	}
	return c, nil
}

// Contracts lists every contract, newest (by Published, to the
// millisecond) first; contracts of the same millisecond come in descending
// hash order.
func (s *Store) Contracts(ctx context.Context) ([]hub.ContractRecord, error) {
	hs, err := s.rdb.ZRevRange(ctx, s.contractOrderKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: contracts: %w", err)
	}
	if len(hs) == 0 {
		return nil, nil
	}
	docs, err := s.rdb.HMGet(ctx, s.contractsKey(), hs...).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: contracts: %w", err)
	}
	out := make([]hub.ContractRecord, 0, len(hs))
	for i, d := range docs {
		doc, ok := d.(string)
		if !ok {
			return nil, fmt.Errorf("redisstore: contract %s is indexed but missing", hs[i])
		}
		c, err := decodeContract(hs[i], []byte(doc))
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
