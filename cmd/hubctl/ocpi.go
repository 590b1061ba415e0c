package main

import (
	"errors"
	"fmt"

	"github.com/m2mhub/m2mhub/contracts"
)

// ocpiFlags complete an OCPI tariff file, taken as its CPO publishes it,
// into a contract: what OCPI leaves to the Location (the time zone) or
// does not know (the exchange rate into msat, the contract revision).
type ocpiFlags struct {
	Rate     string `long:"rate-msat-per-unit" value-name:"MSAT" description:"for an OCPI tariff file: msat per unit of its currency"`
	TimeZone string `long:"time-zone" value-name:"ZONE" description:"for an OCPI tariff file: IANA time zone of the charge point"`
	ID       string `long:"id" description:"for an OCPI tariff file: contract id (default country_code*party_id*id)"`
	Version  uint32 `long:"version" default:"1" description:"for an OCPI tariff file: contract version"`
}

// document returns doc as a contract document: unchanged when it is one,
// wrapped with the flags when it is an OCPI tariff file.
func (f *ocpiFlags) document(doc []byte) ([]byte, error) {
	if !contracts.IsOCPI(doc) {
		if f.Rate != "" || f.TimeZone != "" {
			return nil, fmt.Errorf("%w: --rate-msat-per-unit and --time-zone are for OCPI tariff files; this is a contract document", errUsage)
		}
		return doc, nil
	}
	if f.Rate == "" || f.TimeZone == "" {
		return nil, fmt.Errorf("%w: an OCPI tariff file needs --rate-msat-per-unit and --time-zone", errUsage)
	}
	var rate contracts.Dec
	if err := rate.UnmarshalJSON([]byte(`"` + f.Rate + `"`)); err != nil {
		return nil, fmt.Errorf("%w: --rate-msat-per-unit: %v", errUsage, err)
	}
	out, err := contracts.WrapOCPI(doc, contracts.OCPIEnvelope{ID: f.ID, Version: f.Version, RateMsatPerUnit: rate, TimeZone: f.TimeZone})
	if err != nil {
		if errors.Is(err, contracts.ErrInvalid) || errors.Is(err, contracts.ErrTooLarge) {
			return nil, fmt.Errorf("%w: OCPI tariff: %v", errUsage, err)
		}
		return nil, err
	}
	return out, nil
}
