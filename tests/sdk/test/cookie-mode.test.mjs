// authentication('cookie'): refresh token in an httpOnly cookie, access token in the body.
// Node's fetch keeps no cookies, so the client gets a cookie-carrying fetch.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { authentication, createDirectus, readMe, rest } from '@directus/sdk';

import { assertDirectusJwt, assertRawError, createCookieFetch, explain, parseSetCookie, raw } from './helpers.mjs';
import { startServer } from './server.mjs';

const REFRESH_COOKIE = 'directus_refresh_token';

let server;
let client;

before(async () => {
	server = await startServer();
});

after(async () => {
	client?.stopRefreshing();
	await server?.stop();
});

function findCookie(setCookies, name) {
	return setCookies.map(parseSetCookie).find((c) => c.name === name);
}

test('cookie mode: login, readMe, refresh, logout', async (t) => {
	const browser = createCookieFetch();
	client = createDirectus(server.url, { globals: { fetch: browser.fetch } })
		.with(authentication('cookie', { credentials: 'include' }))
		.with(rest({ credentials: 'include' }));

	// --- login -------------------------------------------------------------------
	const login = await explain('client.login()', client.login({ email: server.adminEmail, password: server.adminPassword }));
	const loginExchange = browser.last('/auth/login');
	assert.deepEqual(loginExchange.body, { email: server.adminEmail, password: server.adminPassword, mode: 'cookie' });
	assert.equal(loginExchange.status, 200);

	assert.equal(typeof login.access_token, 'string');
	assertDirectusJwt(login.access_token);
	assert.equal(login.expires, 900_000);
	assert.ok(!('refresh_token' in login) || login.refresh_token == null, 'cookie mode does not put the refresh token in the body');

	const c0 = browser.jar.get(REFRESH_COOKIE);
	assert.match(c0 ?? '', /^[A-Za-z0-9_-]{64}$/, `jar holds a 64-char ${REFRESH_COOKIE}: ${JSON.stringify([...browser.jar])}`);

	await t.test('refresh cookie attributes', () => {
		const cookie = findCookie(loginExchange.setCookies, REFRESH_COOKIE);
		assert.ok(cookie, `Set-Cookie ${REFRESH_COOKIE}: ${JSON.stringify(loginExchange.setCookies)}`);
		assert.equal(cookie.attrs['max-age'], '604800', 'Max-Age = REFRESH_TOKEN_TTL (7d)');
		assert.equal(cookie.attrs.path, '/');
		assert.equal(cookie.attrs.httponly, true);
		assert.equal(String(cookie.attrs.samesite).toLowerCase(), 'lax');
		const expires = Date.parse(cookie.attrs.expires);
		assert.ok(!Number.isNaN(expires), `Expires is an HTTP date: ${cookie.attrs.expires}`);
		assert.ok(Math.abs(expires - (Date.now() + 604_800_000)) < 120_000, 'Expires ≈ now + 7d');
	});

	// --- readMe (Bearer access token) --------------------------------------------
	const me = await client.request(readMe({ fields: ['id', 'email'] }));
	assert.equal(me.email, server.adminEmail);
	assert.equal(browser.last('/users/me').headers.authorization, `Bearer ${login.access_token}`);

	// --- refresh -----------------------------------------------------------------
	const refreshed = await explain('client.refresh()', client.refresh());
	const refreshExchange = browser.last('/auth/refresh');
	assert.deepEqual(refreshExchange.body, { mode: 'cookie' }, 'SDK sends only {mode} and relies on the cookie');
	assert.match(refreshExchange.headers.cookie ?? '', new RegExp(`(^|; )${REFRESH_COOKIE}=${c0}(;|$)`));
	assertDirectusJwt(refreshed.access_token);
	assert.ok(!('refresh_token' in refreshed) || refreshed.refresh_token == null);
	const c1 = browser.jar.get(REFRESH_COOKIE);
	assert.match(c1 ?? '', /^[A-Za-z0-9_-]{64}$/);
	assert.notEqual(c1, c0, 'refresh rotates the refresh cookie');
	assert.equal(await client.getToken(), refreshed.access_token);

	const me2 = await client.request(readMe({ fields: ['id'] }));
	assert.equal(me2.id, me.id);

	// --- logout ------------------------------------------------------------------
	await explain('client.logout()', client.logout());
	const logoutExchange = browser.last('/auth/logout');
	assert.equal(logoutExchange.status, 204);
	assert.deepEqual(logoutExchange.body, { mode: 'cookie' });
	assert.equal(browser.jar.has(REFRESH_COOKIE), false, `logout clears the refresh cookie: ${JSON.stringify(logoutExchange.setCookies)}`);

	await t.test('the logged-out refresh cookie is dead', async () => {
		const res = await raw(server.url, '/auth/refresh', {
			method: 'POST',
			body: { mode: 'cookie' },
			headers: { Cookie: `${REFRESH_COOKIE}=${c1}` },
		});
		assertRawError(res, 401, 'INVALID_CREDENTIALS');
	});
});
