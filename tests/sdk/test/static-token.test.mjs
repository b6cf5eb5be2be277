// staticToken(): users with a static token set by an admin.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
	authentication,
	createDirectus,
	createUser,
	readMe,
	readUser,
	rest,
	staticToken,
	updateUser,
} from '@directus/sdk';

import { assertSdkError, explain, raw } from './helpers.mjs';
import { randomString, startServer } from './server.mjs';

const CONCEALED = '**********';

let server;
let admin;

before(async () => {
	server = await startServer();
	admin = createDirectus(server.url).with(authentication('json')).with(rest());
	await explain('admin login', admin.login({ email: server.adminEmail, password: server.adminPassword }));
});

after(async () => {
	admin?.stopRefreshing();
	await server?.stop();
});

const staticClient = (token) => createDirectus(server.url).with(staticToken(token)).with(rest());

test('static tokens: create with token, use, conceal, rotate, revoke', async (t) => {
	// Give the user the admin's role so reading /users/me returns full fields
	// (Directus answers only {id} for a user without read permission on itself).
	const adminMe = await admin.request(readMe({ fields: ['id', 'role'] }));
	assert.ok(adminMe.role, 'the bootstrap admin has a role');

	const email = `static-${randomString(10).toLowerCase()}@example.com`;
	const password = randomString(20);
	const token1 = randomString(32);

	const created = await admin.request(createUser({ email, password, role: adminMe.role, token: token1 }));
	assert.ok(created && typeof created.id === 'string', `POST /users returns the created user: ${JSON.stringify(created)}`);
	assert.equal(created.email, email);
	const createdJson = JSON.stringify(created);
	assert.ok(!createdJson.includes(token1), 'the static token is never echoed back');
	assert.ok(!createdJson.includes(password), 'the password is never echoed back');
	const userId = created.id;

	await t.test('staticToken() client can readMe', async () => {
		const client = staticClient(token1);
		assert.equal(await client.getToken(), token1);
		const me = await client.request(readMe({ fields: ['id', 'email'] }));
		assert.deepEqual(me, { id: userId, email });
	});

	await t.test('the token works as a raw Bearer header too', async () => {
		const res = await raw(server.url, '/users/me?fields=id', { headers: { Authorization: `Bearer ${token1}` } });
		assert.equal(res.status, 200, res.text);
		assert.deepEqual(res.json, { data: { id: userId } });
	});

	await t.test('admin reads of `token` are concealed', async () => {
		const user = await admin.request(readUser(userId, { fields: ['id', 'token'] }));
		assert.deepEqual(user, { id: userId, token: CONCEALED });
	});

	const token2 = randomString(32);
	await t.test('PATCH {token} replaces the static token', async () => {
		const updated = await admin.request(updateUser(userId, { token: token2 }));
		assert.ok(!JSON.stringify(updated ?? null).includes(token2), 'the new token is never echoed back');
		if (updated && 'token' in updated) assert.equal(updated.token, CONCEALED);

		const me = await staticClient(token2).request(readMe({ fields: ['id'] }));
		assert.equal(me.id, userId);
		await assertSdkError(staticClient(token1).request(readMe({ fields: ['id'] })), 401, 'INVALID_CREDENTIALS');
	});

	await t.test('PATCH {token: null} revokes the static token', async () => {
		await admin.request(updateUser(userId, { token: null }));
		const user = await admin.request(readUser(userId, { fields: ['token'] }));
		assert.equal(user.token, null, 'a cleared token reads as null, not concealed');

		const err = await assertSdkError(staticClient(token2).request(readMe({ fields: ['id', 'email'] })), 401, 'INVALID_CREDENTIALS');
		assert.equal(err.errors[0].message, 'Invalid user credentials.');
	});
});
