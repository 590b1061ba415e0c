// Package contracts holds m2mhub's tariff documents and the rules that price
// usage with them, with no I/O of its own.
//
// A contract is a declarative JSON document: a common envelope (kind,
// version, human id, currency and exchange rate, hub fee, security rules)
// and one kind-specific body. Kinds are EV charging tariffs (OCPI 2.2.1
// style in decimal strings, or OCPI 2.2.1 / 2.3.0 Tariff objects as a CPO
// publishes them, wrapped by WrapOCPI), toll tables, bandwidth volume tiers, 15-minute energy trading and
// conditional release (pay only if every reading stayed in range). A contract
// is identified by the SHA-256 of its canonical form, so the hash a receipt
// names pins exactly the prices that were applied.
//
// All money math uses shopspring/decimal. Amounts are computed exactly in the
// contract currency, converted to millisatoshi and rounded half up once per
// line; totals are sums of rounded lines, so a breakdown always adds up to the
// msat, and total = hub fee + provider net exactly. An EV session is given
// as charging periods, built from OCPP meter values (UsageFromMeterValues)
// or OCPI CDR charging periods (UsageFromCDRPeriods); NewCDR states a
// priced session as an OCPI CDR. docs/contracts.md gives the document
// format per kind, the rounding rules and worked examples;
// docs/ev-charging.md the OCPI side.
package contracts

// The tariff's own time zone must not depend on the machine's zoneinfo
// files: a contract must price the same everywhere.
import _ "time/tzdata"
