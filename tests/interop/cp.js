// An independent OCPP 1.6J charge point (ocpp-rpc in strict mode: every call and answer is
// checked against the official JSON schemas, ours and its own) for
// tests/integration/test_ocpp_interop.py. Prints one JSON line per event and a summary.
//
// usage: node cp.js <endpoint ws://host:port/path> <identity> [password]
'use strict';
const { RPCClient } = require('ocpp-rpc');

const [endpoint, identity, password] = process.argv.slice(2);
const events = [];
const errors = [];
const profiles = [];
const say = (kind, data) => {
    const line = { kind, ...data };
    events.push(line);
    process.stdout.write(JSON.stringify(line) + '\n');
};

const cli = new RPCClient({
    endpoint, identity, password, protocols: ['ocpp1.6'], strictMode: true, reconnect: false,
});
cli.on('strictValidationFailure', (e) => {
    errors.push(String(e.error || e));
    say('strict-failure', { error: String(e.error || e) });
});
cli.on('badMessage', (e) => {
    errors.push(`bad message: ${e.error}`);
    say('bad-message', { error: String(e.error) });
});

let transactionId = null;
let profileSeen = null;
const seen = new Promise((resolve) => { profileSeen = resolve; });

cli.handle('SetChargingProfile', ({ params }) => {
    profiles.push(params);
    say('profile', { params });
    const limit = params.csChargingProfiles.chargingSchedule.chargingSchedulePeriod[0].limit;
    if (limit >= 6) profileSeen();
    return { status: 'Accepted' };
});
cli.handle('GetConfiguration', () => ({
    configurationKey: [
        { key: 'ChargeProfileMaxStackLevel', readonly: true, value: '3' },
        { key: 'SupportedFeatureProfiles', readonly: true, value: 'Core,SmartCharging,RemoteTrigger' },
        { key: 'ChargingScheduleAllowedChargingRateUnit', readonly: true, value: 'Current' },
    ],
}));
cli.handle('ChangeConfiguration', ({ params }) => {
    say('change-configuration', { params });
    return { status: 'Accepted' };
});
cli.handle('ClearChargingProfile', () => ({ status: 'Accepted' }));
cli.handle('TriggerMessage', ({ params }) => {
    say('trigger', { params });
    if (params.requestedMessage === 'MeterValues') setTimeout(meterValues, 10);
    if (params.requestedMessage === 'StatusNotification') setTimeout(() => status('Charging'), 10);
    return { status: 'Accepted' };
});
cli.handle(({ method }) => {
    errors.push(`unexpected call ${method}`);
    return {};
});

const now = () => new Date().toISOString();
const status = (s) => cli.call('StatusNotification', {
    connectorId: 1, errorCode: 'NoError', status: s, timestamp: now(),
});
const meterValues = () => cli.call('MeterValues', {
    connectorId: 1,
    transactionId: transactionId ?? undefined,
    meterValue: [{
        timestamp: now(),
        sampledValue: [
            { value: '15.9', measurand: 'Current.Import', phase: 'L1', unit: 'A' },
            { value: '15.8', measurand: 'Current.Import', phase: 'L2', unit: 'A' },
            { value: '16.0', measurand: 'Current.Import', phase: 'L3', unit: 'A' },
            { value: '10.98', measurand: 'Power.Active.Import', unit: 'kW' },
            { value: '1234', measurand: 'Energy.Active.Import.Register', unit: 'Wh' },
        ],
    }],
}).catch((e) => errors.push(`MeterValues: ${e}`));

async function main() {
    await cli.connect();
    const boot = await cli.call('BootNotification', {
        chargePointVendor: 'ocpp-rpc', chargePointModel: 'interop',
    });
    say('boot', { status: boot.status, interval: boot.interval });
    await cli.call('Heartbeat', {});
    await status('Available');
    await status('Preparing');
    const auth = await cli.call('Authorize', { idTag: 'NODE-TAG' });
    say('authorize', { status: auth.idTagInfo.status });
    const start = await cli.call('StartTransaction', {
        connectorId: 1, idTag: 'NODE-TAG', meterStart: 1000, timestamp: now(),
    });
    transactionId = start.transactionId;
    say('start', { transactionId });
    await status('Charging');
    await meterValues();
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('no profile within 20 s')), 20000));
    await Promise.race([seen, timeout]);
    // An unknown transaction (queued while offline) is still answered.
    const stale = await cli.call('StopTransaction', { transactionId: 999999, meterStop: 5, timestamp: now() });
    say('stop-unknown', { answer: stale });
    await cli.call('StopTransaction', { transactionId, meterStop: 2000, timestamp: now() });
    await status('Finishing');
    await new Promise((r) => setTimeout(r, 300));
}

main()
    .catch((e) => { errors.push(String(e)); })
    .finally(async () => {
        say('summary', { errors, profiles: profiles.length });
        await cli.close({ force: true }).catch(() => {});
        process.exit(errors.length ? 1 : 0);
    });
