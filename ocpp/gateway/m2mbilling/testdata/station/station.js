// An OCPP 2.0.1 charging station played by ocpp-rpc in strict mode: it
// validates every call it sends and every answer and call it receives
// against the official OCPP 2.0.1 schemas. Run through internal/ocppstation
// by the gateway's end-to-end tests, with:
//   OCPP_URL       wss://127.0.0.1:PORT/ocpp
//   OCPP_CA        PEM file of the gateway's TLS certificate
//   OCPP_STATION   station identity, OCPP_PASSWORD its password
//   OCPP_TOKEN     the idToken presented
//   OCPP_READINGS  JSON array of three OCMF strings (begin, middle, end)
// It prints one JSON line per answer, then "stop-wanted" and waits for
// the gateway's RequestStopTransaction, which it accepts, and ends the
// transaction.
'use strict';
const fs = require('fs');
const { RPCClient } = require('ocpp-rpc');

const env = (k) => {
  const v = process.env[k];
  if (!v) { console.error(`station: ${k} is not set`); process.exit(2); }
  return v;
};
const readings = JSON.parse(env('OCPP_READINGS'));
const out = (step, body) => console.log(JSON.stringify({ step, body }));

const client = new RPCClient({
  endpoint: env('OCPP_URL'),
  identity: env('OCPP_STATION'),
  password: env('OCPP_PASSWORD'),
  protocols: ['ocpp2.0.1'],
  strictMode: true,
  reconnect: false,
  wsOpts: { ca: fs.readFileSync(env('OCPP_CA')) },
});
client.on('strictValidationFailure', (e) => { console.error('station: strict validation failed', e.error); process.exit(3); });
client.on('badMessage', (e) => { console.error('station: bad message', e.error); process.exit(3); });

const now = () => new Date().toISOString();
const sampled = (ocmf, wh) => [{
  timestamp: now(),
  sampledValue: [{
    value: wh, measurand: 'Energy.Active.Import.Register',
    signedMeterValue: { signedMeterData: ocmf, signingMethod: 'ECDSA-secp256r1-SHA256', encodingMethod: 'OCMF', publicKey: '' },
  }],
}];
const tx = 'tx-' + process.pid;
let seq = 0;
const event = (eventType, triggerReason, extra) => Object.assign({
  eventType, timestamp: now(), triggerReason, seqNo: seq++,
  transactionInfo: { transactionId: tx }, evse: { id: 1, connectorId: 1 },
}, extra);

async function main() {
  let stopped;
  const stopRequested = new Promise((resolve) => { stopped = resolve; });
  client.handle('RequestStopTransaction', ({ params }) => {
    if (params.transactionId !== tx) return { status: 'Rejected' };
    setImmediate(stopped);
    return { status: 'Accepted' };
  });
  await client.connect();
  out('BootNotification', await client.call('BootNotification', { chargingStation: { model: 'AC-22', vendorName: 'Acme' }, reason: 'PowerUp' }));
  out('Heartbeat', await client.call('Heartbeat', {}));
  out('StatusNotification', await client.call('StatusNotification', { timestamp: now(), connectorStatus: 'Occupied', evseId: 1, connectorId: 1 }));
  out('AuthorizeUnknown', await client.call('Authorize', { idToken: { idToken: 'NOBODY00', type: 'ISO14443' } }));
  const idToken = { idToken: env('OCPP_TOKEN'), type: 'ISO14443' };
  out('Authorize', await client.call('Authorize', { idToken }));
  out('Started', await client.call('TransactionEvent', event('Started', 'Authorized', { idToken, meterValue: sampled(readings[0], 1000000) })));
  out('MeterValues', await client.call('MeterValues', { evseId: 1, meterValue: sampled(readings[1], 1011250) }));
  console.log('stop-wanted');
  await stopRequested;
  out('Ended', await client.call('TransactionEvent', event('Ended', 'RemoteStop', {
    transactionInfo: { transactionId: tx, stoppedReason: 'Remote' }, meterValue: sampled(readings[2], 1015500),
  })));
  await client.close();
}
main().catch((e) => { console.error('station:', e); process.exit(1); });
