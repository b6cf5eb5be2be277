// authentication('session'): the session JWT lives only in an httpOnly cookie;
// the SDK sends no Authorization header at all.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { authentication, createDirectus, readMe, rest } from '@directus/sdk';

import { assertDirectusJwt, assertRawError, createCookieFetch, explain, parseSetCookie, raw } from './helpers.mjs';
import { startServer } from './server.mjs';

const SESSION_COOKIE = 'directus_session_token';
const SESSION_TTL_MS = 86_400_000; // Directus default SESSION_COOKIE_TTL=1d

let server;
let client;

before(async () => {
	server = await startServer();
});

after(async () => {
	client?.stopRefreshing();
	await server?.stop();
});

test('session mode: login, readMe via cookie only, refresh, logout', async (t) => {
	const browser = createCookieFetch();
	client = createDirectus(server.url, { globals: { fetch: browser.fetch } })
		.with(authentication('session', { credentials: 'include' }))
		.with(rest({ credentials: 'include' }));

	// --- login -------------------------------------------------------------------
	const login = await explain('client.login()', client.login({ email: server.adminEmail, password: server.adminPassword }));
	const loginExchange = browser.last('/auth/login');
	assert.deepEqual(loginExchange.body, { email: server.adminEmail, password: server.adminPassword, mode: 'session' });
	assert.equal(loginExchange.status, 200);
	// Directus signs the session JWT with SESSION_COOKIE_TTL (default 1d), not ACCESS_TOKEN_TTL,
	// and reports that lifetime as `expires`.
	assert.equal(login.expires, SESSION_TTL_MS, 'session mode: expires = SESSION_COOKIE_TTL (1d) in ms');
	assert.ok(login.access_token == null, 'session mode: no access_token in the body');
	assert.ok(login.refresh_token == null, 'session mode: no refresh_token in the body');
	assert.equal(await client.getToken(), null, 'the SDK holds no bearer token in session mode');

	const s0 = browser.jar.get(SESSION_COOKIE);
	assert.ok(s0, `jar holds ${SESSION_COOKIE}: ${JSON.stringify(loginExchange.setCookies)}`);
	const sessionClaims = assertDirectusJwt(s0);
	assert.equal(sessionClaims.exp - sessionClaims.iat, SESSION_TTL_MS / 1000, 'session JWT lifetime = SESSION_COOKIE_TTL');

	await t.test('session cookie attributes', () => {
		const cookie = loginExchange.setCookies.map(parseSetCookie).find((c) => c.name === SESSION_COOKIE);
		assert.equal(cookie.attrs.path, '/');
		assert.equal(cookie.attrs.httponly, true);
		assert.equal(String(cookie.attrs.samesite).toLowerCase(), 'lax');
		assert.equal(cookie.attrs['max-age'], String(SESSION_TTL_MS / 1000), 'Max-Age = SESSION_COOKIE_TTL (1d)');
	});

	// --- readMe with only the cookie ---------------------------------------------
	const me = await client.request(readMe({ fields: ['id', 'email'] }));
	assert.equal(me.email, server.adminEmail);
	const meExchange = browser.last('/users/me');
	assert.equal(meExchange.headers.authorization, undefined, 'the SDK sends no Authorization header in session mode');
	assert.match(meExchange.headers.cookie ?? '', new RegExp(`(^|; )${SESSION_COOKIE}=`));

	await t.test('a raw request with only the session cookie is authenticated', async () => {
		const res = await raw(server.url, '/users/me?fields=id,email', { headers: { Cookie: `${SESSION_COOKIE}=${s0}` } });
		assert.equal(res.status, 200, res.text);
		assert.deepEqual(res.json, { data: { id: me.id, email: server.adminEmail } });
	});

	// --- refresh -----------------------------------------------------------------
	const refreshed = await explain('client.refresh()', client.refresh());
	const refreshExchange = browser.last('/auth/refresh');
	assert.deepEqual(refreshExchange.body, { mode: 'session' }, 'SDK sends only {mode} and relies on the cookie');
	assert.equal(refreshExchange.status, 200);
	assert.equal(refreshed.expires, SESSION_TTL_MS);
	assert.ok(refreshed.access_token == null && refreshed.refresh_token == null, 'session refresh body is just {expires}');
	const s1 = browser.jar.get(SESSION_COOKIE);
	assert.ok(s1, 'refresh sets a new session cookie');
	assert.notEqual(s1, s0, 'refresh rotates the session cookie');
	assertDirectusJwt(s1);

	const me2 = await client.request(readMe({ fields: ['id'] }));
	assert.equal(me2.id, me.id);
	assert.match(browser.last('/users/me').headers.cookie ?? '', new RegExp(`(^|; )${SESSION_COOKIE}=${s1.replace(/\./g, '\\.')}(;|$)`));

	// --- logout ------------------------------------------------------------------
	await explain('client.logout()', client.logout());
	const logoutExchange = browser.last('/auth/logout');
	assert.equal(logoutExchange.status, 204);
	assert.deepEqual(logoutExchange.body, { mode: 'session' });
	assert.equal(browser.jar.has(SESSION_COOKIE), false, `logout clears the session cookie: ${JSON.stringify(logoutExchange.setCookies)}`);

	await t.test('the logged-out session cookie is dead immediately', async () => {
		const res = await raw(server.url, '/users/me', { headers: { Cookie: `${SESSION_COOKIE}=${s1}` } });
		assertRawError(res, 401, 'INVALID_CREDENTIALS');
	});
});
