// Access control driven the way an admin drives Directus with @directus/sdk: roles, policies,
// access rows and permissions created through the SDK, then a non-admin user's static token
// that reads only what its policy allows.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
	authentication,
	createDirectus,
	createPermission,
	createPolicy,
	createRole,
	createUser,
	createUsers,
	deleteUsers,
	readMe,
	readPermissions,
	readPolicyGlobals,
	readRolesMe,
	readUserPermissions,
	readUsers,
	rest,
	staticToken,
	updateUsers,
	updateUsersBatch,
} from '@directus/sdk';

import { assertSdkError, explain } from './helpers.mjs';
import { randomString, startServer } from './server.mjs';

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

const email = (tag) => `${tag}-${randomString(8).toLowerCase()}@example.com`;

test('users: create many, read with filters, update by keys and batch, delete by keys', async () => {
	const tag = randomString(6);
	const created = await admin.request(
		createUsers([
			{ email: email('sdk-a'), first_name: `A-${tag}` },
			{ email: email('sdk-b'), first_name: `B-${tag}` },
		]),
	);
	assert.equal(created.length, 2);
	const ids = created.map((u) => u.id);

	const found = await admin.request(
		readUsers({ filter: { first_name: { _ends_with: tag } }, fields: ['id', 'first_name'], sort: ['first_name'] }),
	);
	assert.deepEqual(
		found.map((u) => u.first_name),
		[`A-${tag}`, `B-${tag}`],
	);
	const none = await admin.request(readUsers({ filter: { _and: [{ id: { _in: ids } }, { first_name: { _null: true } }] } }));
	assert.deepEqual(none, []);

	const updated = await admin.request(updateUsers(ids, { title: 'Batch' }, { fields: ['id', 'title'] }));
	assert.deepEqual(
		updated.map((u) => u.title),
		['Batch', 'Batch'],
	);
	const batch = await admin.request(
		updateUsersBatch([
			{ id: ids[0], last_name: 'First' },
			{ id: ids[1], last_name: 'Second' },
		]),
	);
	assert.deepEqual(batch.map((u) => u.last_name).sort(), ['First', 'Second']);

	await admin.request(deleteUsers(ids));
	const gone = await admin.request(readUsers({ filter: { id: { _in: ids } } }));
	assert.deepEqual(gone, []);
});

test('roles, policies and permissions through the SDK shape what a static token may do', async () => {
	const policy = await admin.request(createPolicy({ name: `Readers ${randomString(6)}`, app_access: false, admin_access: false }));
	assert.equal(typeof policy.id, 'string');
	const role = await admin.request(createRole({ name: `Readers ${randomString(6)}`, policies: { create: [{ policy: policy.id }] } }));
	const permission = await admin.request(
		createPermission({
			policy: policy.id,
			collection: 'directus_users',
			action: 'read',
			fields: ['id', 'email'],
			permissions: { id: { _eq: '$CURRENT_USER' } },
		}),
	);
	assert.equal(typeof permission.id, 'number');
	assert.deepEqual(permission.fields, ['id', 'email']);
	const listed = await admin.request(readPermissions({ filter: { policy: { _eq: policy.id } } }));
	assert.equal(listed.length, 1);
	assert.deepEqual(listed[0].permissions, { id: { _eq: '$CURRENT_USER' } });

	const token = randomString(32);
	const userEmail = email('sdk-reader');
	const user = await admin.request(createUser({ email: userEmail, password: randomString(16), role: role.id, token }));
	const reader = createDirectus(server.url).with(staticToken(token)).with(rest());

	const own = await reader.request(readUsers());
	assert.deepEqual(own, [{ id: user.id, email: userEmail }]);
	assert.deepEqual(await reader.request(readMe()), { id: user.id, email: userEmail });
	await assertSdkError(reader.request(readUsers({ fields: ['first_name'] })), 403, 'FORBIDDEN');
	await assertSdkError(reader.request(createUser({ email: email('nope') })), 403, 'FORBIDDEN');
	await assertSdkError(reader.request(readPermissions()), 403, 'FORBIDDEN');

	const roles = await reader.request(readRolesMe({ fields: ['id'] }));
	assert.deepEqual(roles, [{ id: role.id }]);
	const globals = await reader.request(readPolicyGlobals());
	assert.deepEqual(globals, { app_access: false, admin_access: false, enforce_tfa: false });
	const mine = await reader.request(readUserPermissions());
	assert.equal(mine.directus_users.read.access, 'partial');
	assert.deepEqual(mine.directus_users.read.fields, ['id', 'email']);

	const adminGlobals = await admin.request(readPolicyGlobals());
	assert.equal(adminGlobals.admin_access, true);
});
