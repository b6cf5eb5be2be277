// authentication('json'): login / readMe / refresh (rotation + grace window) / logout.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { authentication, createDirectus, readMe, rest } from '@directus/sdk';

import { assertDirectusJwt, assertRawError, explain, inspectableStorage, raw, waitForNextJwtSecond } from './helpers.mjs';
import { startServer } from './server.mjs';

let server;
const clients = [];

before(async () => {
	server = await startServer();
});

after(async () => {
	for (const client of clients) client.stopRefreshing();
	await server?.stop();
});

function jsonClient(options = {}) {
	const storage = inspectableStorage();
	const client = createDirectus(server.url)
		.with(authentication('json', { storage, ...options }))
		.with(rest());
	clients.push(client);
	return { client, storage };
}

test('json mode: login, readMe, refresh rotation with grace window, logout', async (t) => {
	const { client, storage } = jsonClient();

	// --- login -------------------------------------------------------------------
	const login = await explain('client.login()', client.login({ email: server.adminEmail, password: server.adminPassword }));
	assert.equal(typeof login.access_token, 'string');
	assert.equal(typeof login.refresh_token, 'string');
	assert.equal(login.refresh_token.length, 64, 'refresh token is 64 characters (nanoid(64) in Directus)');
	assert.match(login.refresh_token, /^[A-Za-z0-9_-]{64}$/);
	assert.equal(login.expires, 900_000, 'expires is the access token TTL in ms (Directus default ACCESS_TOKEN_TTL=15m)');

	const a0 = await client.getToken();
	assert.equal(a0, login.access_token, 'getToken() returns the access token from the login response');
	const claims0 = assertDirectusJwt(a0);
	assert.equal(claims0.exp - claims0.iat, 900, 'JWT lifetime matches ACCESS_TOKEN_TTL');
	const r0 = storage.peek().refresh_token;
	assert.equal(r0, login.refresh_token, 'the SDK stores the refresh token from the login response');

	// --- readMe ------------------------------------------------------------------
	const me = await client.request(readMe({ fields: ['id', 'email'] }));
	assert.equal(me.email, server.adminEmail);
	assert.equal(typeof me.id, 'string');
	assert.deepEqual(Object.keys(me).sort(), ['email', 'id'], '`fields` limits the returned fields');
	assert.equal(claims0.id, me.id, 'JWT `id` claim is the user id');

	// --- refresh -----------------------------------------------------------------
	await waitForNextJwtSecond(a0); // same-second JWTs may legitimately be byte-identical
	const refreshed = await explain('client.refresh()', client.refresh());
	const a1 = await client.getToken();
	const r1 = refreshed.refresh_token;
	assert.equal(a1, refreshed.access_token);
	assert.notEqual(a1, a0, 'refresh() yields a new access token');
	assertDirectusJwt(a1);
	assert.equal(typeof r1, 'string');
	assert.match(r1, /^[A-Za-z0-9_-]{64}$/);
	assert.notEqual(r1, r0, 'refresh() rotates the refresh token');
	assert.equal(storage.peek().refresh_token, r1, 'the SDK stored the rotated refresh token');
	assert.equal(refreshed.expires, 900_000);

	const me2 = await client.request(readMe({ fields: ['id', 'email'] }));
	assert.equal(me2.id, me.id, 'readMe works with the refreshed access token');

	await t.test('grace window: reusing the old refresh token returns the same successor', async () => {
		const res = await raw(server.url, '/auth/refresh', { method: 'POST', body: { refresh_token: r0, mode: 'json' } });
		assert.equal(res.status, 200, `old refresh token inside the 10 s grace window: ${res.text}`);
		assert.equal(res.json.data.refresh_token, r1, 'grace reuse returns the SAME successor refresh token');
		assertDirectusJwt(res.json.data.access_token);
		assert.equal(typeof res.json.data.expires, 'number');
	});

	// --- logout ------------------------------------------------------------------
	const out = await explain('client.logout()', client.logout());
	assert.equal(out, undefined);
	assert.equal(storage.peek().refresh_token, null, 'the SDK clears its storage on logout');
	assert.equal(await client.getToken(), null);

	await t.test('after logout the last refresh token is dead', async () => {
		const res = await raw(server.url, '/auth/refresh', { method: 'POST', body: { refresh_token: r1, mode: 'json' } });
		assertRawError(res, 401, 'INVALID_CREDENTIALS');
	});
});

test('json mode: the SDK request bodies are accepted verbatim', async () => {
	// Pin the exact wire format the SDK produces, so a server-side change that
	// rejects it is caught here rather than in an app.
	const seen = [];
	const recordingFetch = async (input, init) => {
		seen.push({ path: new URL(String(input)).pathname, init });
		return fetch(input, init);
	};
	const client = createDirectus(server.url, { globals: { fetch: recordingFetch } })
		.with(authentication('json'))
		.with(rest());
	clients.push(client);

	await explain('client.login()', client.login({ email: server.adminEmail, password: server.adminPassword }));
	const { refresh_token } = await explain('client.refresh()', client.refresh());
	await client.request(readMe({ fields: ['id'] }));
	await explain('client.logout()', client.logout());

	const [login, refresh, me, logout] = seen;
	assert.equal(login.path, '/auth/login');
	assert.deepEqual(JSON.parse(login.init.body), {
		email: server.adminEmail,
		password: server.adminPassword,
		mode: 'json',
	});
	assert.equal(refresh.path, '/auth/refresh');
	assert.equal(JSON.parse(refresh.init.body).mode, 'json');
	assert.equal(typeof JSON.parse(refresh.init.body).refresh_token, 'string');
	assert.equal(refresh.init.headers.Authorization, undefined, 'SDK refresh sends no Authorization header');
	assert.equal(me.path, '/users/me');
	assert.equal(me.init.method, 'GET');
	assert.equal(me.init.headers['Content-Type'], 'application/json', 'SDK sends Content-Type: application/json even on GET');
	assert.match(me.init.headers.Authorization, /^Bearer /);
	assert.equal(logout.path, '/auth/logout');
	assert.deepEqual(JSON.parse(logout.init.body), { mode: 'json', refresh_token });
	assert.equal(logout.init.headers.Authorization, undefined, 'SDK logout sends no Authorization header');
});
