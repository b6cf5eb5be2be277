// autoRefresh across access-token expiry (ACCESS_TOKEN_TTL=3s).
//
// The SDK refreshes in two ways, both exercised here during one shared sleep:
//  - autoRefresh: true  -> a timer fires `expires - msRefreshBeforeExpires` ms after login/refresh;
//  - on demand          -> getToken() (called before every request) refreshes when the stored
//                          expiry is within msRefreshBeforeExpires, even with autoRefresh: false.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { authentication, createDirectus, readMe, rest } from '@directus/sdk';

import { assertDirectusJwt, assertRawError, explain, raw, sleep } from './helpers.mjs';
import { startServer } from './server.mjs';

let server;
const clients = [];

before(async () => {
	server = await startServer({ ACCESS_TOKEN_TTL: '3s' });
});

after(async () => {
	for (const client of clients) client.stopRefreshing();
	await server?.stop();
});

function client(autoRefresh) {
	const c = createDirectus(server.url)
		.with(authentication('json', { autoRefresh, msRefreshBeforeExpires: 1000 }))
		.with(rest());
	clients.push(c);
	return c;
}

test('the SDK keeps a session alive across a 3 s access token TTL', async () => {
	const timed = client(true);
	const onDemand = client(false);
	const credentials = () => ({ email: server.adminEmail, password: server.adminPassword });

	const loginTimed = await explain('timed.login()', timed.login(credentials()));
	const loginOnDemand = await explain('onDemand.login()', onDemand.login(credentials()));
	assert.equal(loginTimed.expires, 3000, 'expires is in milliseconds and honours ACCESS_TOKEN_TTL');
	assert.equal(loginOnDemand.expires, 3000);

	const first = await timed.getToken();
	const firstOnDemand = await onDemand.getToken();
	const claims = assertDirectusJwt(first);
	assert.equal(claims.exp - claims.iat, 3, 'JWT exp = iat + 3 s');

	await sleep(4500);

	// The original access token has expired on the server.
	const expired = await raw(server.url, '/users/me', { headers: { Authorization: `Bearer ${first}` } });
	assertRawError(expired, 401, 'TOKEN_EXPIRED'); // a 200 here usually means JWT validation has leeway

	// Timer-driven refresh (autoRefresh: true).
	const me = await timed.request(readMe({ fields: ['id', 'email'] }));
	assert.equal(me.email, server.adminEmail);
	const current = await timed.getToken();
	assert.notEqual(current, first, 'the SDK refreshed the access token');
	assert.ok(assertDirectusJwt(current).exp * 1000 > Date.now(), 'the current token is not expired');

	// On-demand refresh inside getToken() (autoRefresh: false).
	const me2 = await onDemand.request(readMe({ fields: ['id', 'email'] }));
	assert.equal(me2.id, me.id);
	const currentOnDemand = await onDemand.getToken();
	assert.notEqual(currentOnDemand, firstOnDemand, 'getToken() refreshed the expired access token');
	assert.ok(assertDirectusJwt(currentOnDemand).exp * 1000 > Date.now());
});
