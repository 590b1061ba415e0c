package gateway

import "encoding/json"

// The parts of the OCPP 2.0.1 messages the gateway reads or writes. The
// schemas (package ocpp) check the whole message; these structs name only
// the fields the gateway uses.

type idToken struct {
	IDToken string `json:"idToken"`
	Type    string `json:"type"`
}

type idTokenInfo struct {
	Status string `json:"status"`
}

type authorizeReq struct {
	IDToken idToken `json:"idToken"`
}

type authorizeConf struct {
	IDTokenInfo idTokenInfo `json:"idTokenInfo"`
}

type bootConf struct {
	CurrentTime string `json:"currentTime"`
	Interval    int    `json:"interval"`
	Status      string `json:"status"`
}

type heartbeatConf struct {
	CurrentTime string `json:"currentTime"`
}

type signedMeterValue struct {
	SignedMeterData string `json:"signedMeterData"`
	SigningMethod   string `json:"signingMethod"`
	EncodingMethod  string `json:"encodingMethod"`
	PublicKey       string `json:"publicKey"`
}

type sampledValue struct {
	Value            json.Number       `json:"value"`
	SignedMeterValue *signedMeterValue `json:"signedMeterValue,omitempty"`
}

type meterValue struct {
	Timestamp    string         `json:"timestamp"`
	SampledValue []sampledValue `json:"sampledValue"`
}

type evse struct {
	ID int `json:"id"`
}

type transactionEventReq struct {
	EventType       string `json:"eventType"`
	Timestamp       string `json:"timestamp"`
	TriggerReason   string `json:"triggerReason"`
	SeqNo           int    `json:"seqNo"`
	TransactionInfo struct {
		TransactionID string `json:"transactionId"`
		StoppedReason string `json:"stoppedReason"`
	} `json:"transactionInfo"`
	Evse       *evse        `json:"evse,omitempty"`
	IDToken    *idToken     `json:"idToken,omitempty"`
	MeterValue []meterValue `json:"meterValue,omitempty"`
}

type transactionEventConf struct {
	IDTokenInfo *idTokenInfo `json:"idTokenInfo,omitempty"`
}

type meterValuesReq struct {
	EvseID     int          `json:"evseId"`
	MeterValue []meterValue `json:"meterValue"`
}

type requestStopReq struct {
	TransactionID string `json:"transactionId"`
}

type requestStopConf struct {
	Status string `json:"status"`
}

// signedReadings collects the signed meter data of every sampled value.
func signedReadings(mvs []meterValue) []string {
	var out []string
	for _, mv := range mvs {
		for _, sv := range mv.SampledValue {
			if sv.SignedMeterValue != nil && sv.SignedMeterValue.SignedMeterData != "" {
				out = append(out, sv.SignedMeterValue.SignedMeterData)
			}
		}
	}
	return out
}
