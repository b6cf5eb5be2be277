// Error shapes as the SDK sees them, plus the server's stdout contract.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { authentication, createDirectus, isDirectusError, readMe, refresh, rest, staticToken } from '@directus/sdk';

import { assertSdkError } from './helpers.mjs';
import { randomString, startServer } from './server.mjs';

let server;
const clients = [];

before(async () => {
	server = await startServer();
});

after(async () => {
	for (const client of clients) client.stopRefreshing?.();
	await server?.stop();
});

function jsonClient() {
	const client = createDirectus(server.url).with(authentication('json')).with(rest());
	clients.push(client);
	return client;
}

test('wrong password: INVALID_CREDENTIALS / 401 through the SDK', async () => {
	const client = jsonClient();
	const err = await assertSdkError(
		client.login({ email: server.adminEmail, password: `${server.adminPassword}-wrong` }),
		401,
		'INVALID_CREDENTIALS',
	);
	assert.equal(err.name, 'RequestError');
	assert.ok(isDirectusError(err), 'the SDK recognises the error as a Directus error');
	assert.equal(err.errors[0].message, 'Invalid user credentials.');
	assert.equal(err.message, 'Invalid user credentials.', 'the SDK copies errors[0].message to error.message');
	assert.match(err.response.headers.get('content-type') ?? '', /^application\/json/);
	assert.equal(await client.getToken(), null, 'a failed login stores no token');
});

test('unknown email: the same INVALID_CREDENTIALS error (no user enumeration)', async () => {
	const err = await assertSdkError(
		jsonClient().login({ email: `nobody-${randomString(8).toLowerCase()}@example.com`, password: 'whatever-password' }),
		401,
		'INVALID_CREDENTIALS',
	);
	assert.equal(err.errors[0].message, 'Invalid user credentials.');
});

test('readMe without any credentials: INVALID_CREDENTIALS / 401', async () => {
	const anonymous = createDirectus(server.url).with(rest());
	await assertSdkError(anonymous.request(readMe()), 401, 'INVALID_CREDENTIALS');
});

test('readMe with an unknown static token: INVALID_CREDENTIALS / 401', async () => {
	const client = createDirectus(server.url).with(staticToken(randomString(32))).with(rest());
	await assertSdkError(client.request(readMe({ fields: ['id'] })), 401, 'INVALID_CREDENTIALS');
});

test('refresh with a bogus refresh token: INVALID_CREDENTIALS / 401', async () => {
	// The rest `refresh` command (unlike client.refresh(), which only uses its stored token)
	// sends an explicit refresh_token: {"mode":"json","refresh_token":"..."}.
	const client = createDirectus(server.url).with(rest());
	await assertSdkError(client.request(refresh({ mode: 'json', refresh_token: randomString(64) })), 401, 'INVALID_CREDENTIALS');
});

test('server contract: exactly one line on stdout', () => {
	assert.equal(server.stdoutLines.length, 1, `stdout must carry only the listening line, got: ${JSON.stringify(server.stdoutLines)}`);
	assert.match(server.stdoutLines[0], /^Tessera listening on http:\/\/127\.0\.0\.1:\d+$/);
});
