// Password reset through the SDK's passwordRequest and passwordReset, following the link in
// the mail an SMTP sink on 127.0.0.1 received.

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, test } from 'node:test';

import { authentication, createDirectus, createUser, passwordRequest, passwordReset, rest } from '@directus/sdk';

import { assertSdkError } from './helpers.mjs';
import { startServer } from './server.mjs';

/** An SMTP sink: just enough SMTP for one client, keeping each message's raw text. */
function smtpSink() {
	const messages = [];
	const waiting = [];
	const server = createServer((socket) => {
		let buffer = '';
		let data = null;
		socket.write('220 sink ESMTP\r\n');
		socket.on('data', (chunk) => {
			buffer += chunk.toString('utf8');
			let end;
			while ((end = buffer.indexOf('\r\n')) >= 0) {
				const line = buffer.slice(0, end);
				buffer = buffer.slice(end + 2);
				if (data !== null) {
					if (line === '.') {
						const message = data;
						data = null;
						socket.write('250 kept\r\n');
						const next = waiting.shift();
						if (next) next(message);
						else messages.push(message);
					} else {
						data += `${line.startsWith('.') ? line.slice(1) : line}\r\n`;
					}
					continue;
				}
				const verb = line.slice(0, 4).toUpperCase();
				if (verb === 'DATA') {
					data = '';
					socket.write('354 go on\r\n');
				} else if (verb === 'QUIT') {
					socket.end('221 bye\r\n');
				} else {
					socket.write('250 ok\r\n');
				}
			}
		});
	});
	return {
		listen: () => new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port))),
		next: () => (messages.length > 0 ? Promise.resolve(messages.shift()) : new Promise((resolve) => waiting.push(resolve))),
		close: () => server.close(),
	};
}

/** The reset link in a raw message, whichever transfer encoding carried it. */
function resetLink(raw) {
	const decoded = raw
		.replace(/=\r\n/g, '')
		.replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
	const fromBase64 = [...raw.matchAll(/\r\n\r\n([A-Za-z0-9+/=\r\n]{40,})/g)]
		.map((m) => Buffer.from(m[1].replace(/\r\n/g, ''), 'base64').toString('utf8'))
		.join('\n');
	const match = `${decoded}\n${fromBase64}`.match(/https:\/\/app\.example\.com\/reset\?token=[A-Za-z0-9._-]+/);
	assert.ok(match, `no reset link in:\n${raw}`);
	return match[0];
}

const sink = smtpSink();
const clients = [];
let server;

before(async () => {
	const port = await sink.listen();
	server = await startServer({
		EMAIL_TRANSPORT: 'smtp',
		EMAIL_SMTP_HOST: '127.0.0.1',
		EMAIL_SMTP_PORT: String(port),
		PASSWORD_RESET_URL_ALLOW_LIST: 'https://app.example.com/reset',
		PASSWORD_RESET_STALL_TIME: '0',
	});
});

after(async () => {
	for (const c of clients) c.stopRefreshing?.();
	await server?.stop();
	sink.close();
});

test('passwordRequest mails a link; passwordReset with its token sets the new password once', async () => {
	const admin = createDirectus(server.url).with(authentication('json')).with(rest());
	await admin.login({ email: server.adminEmail, password: server.adminPassword });
	await admin.request(createUser({ email: 'sdk-reset@example.com', password: 'Old-Password-1' }));
	const client = createDirectus(server.url).with(authentication('json')).with(rest());
	clients.push(admin, client);

	await client.request(passwordRequest('sdk-reset@example.com', 'https://app.example.com/reset'));
	const link = resetLink(await sink.next());
	const token = new URL(link).searchParams.get('token');
	await client.request(passwordReset(token, 'New-Password-2'));

	await assertSdkError(client.login({ email: 'sdk-reset@example.com', password: 'Old-Password-1' }), 401, 'INVALID_CREDENTIALS');
	const auth = await client.login({ email: 'sdk-reset@example.com', password: 'New-Password-2' });
	assert.equal(typeof auth.access_token, 'string');
	await assertSdkError(client.request(passwordReset(token, 'Third-Password-3')), 403, 'FORBIDDEN');
	await assertSdkError(
		client.request(passwordRequest('sdk-reset@example.com', 'https://evil.example.com/reset')),
		400,
		'INVALID_PAYLOAD',
	);
});
