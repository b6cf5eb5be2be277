// Starts a throw-away Tessera server for one test file.
//
// Usage (in a test file):
//
//   let server;
//   before(async () => { server = await startServer({ ACCESS_TOKEN_TTL: '3s' }); });
//   after(async () => { await server?.stop(); });
//
// The binary comes from $TESSERA_BIN. The server must print exactly one line to
// STDOUT, `Tessera listening on http://127.0.0.1:<port>`, once it accepts
// connections; everything else (logs) goes to stderr.
//
// Set TESSERA_DEBUG=1 to mirror the server's stderr to this process' stderr.
//
// With TESSERA_TEST_DB=pg each server runs on a fresh PostgreSQL database, created and
// dropped with psql on the server TESSERA_TEST_PG names (a libpq connection string; by
// default the local one, user postgres).
//
// Note: on Node 20, `node --test test/` also runs this module as a "test file";
// it defines no tests and exits immediately, so it shows up as a passing entry.

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const STDERR_LIMIT = 64 * 1024;
const READY_LINE = /^Tessera listening on (http:\/\/\S+?)\s*$/;

// tests/sdk/test/server.mjs -> repository root
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

// Configuration keys that must never leak in from the parent environment:
// they would make runs non-hermetic (a stray PORT, a shared DB, a different TTL...).
// Everything the server needs is set explicitly below (or per test via overrides).
const STRIPPED_ENV = [
	/^HOST$/,
	/^PORT$/,
	/^PUBLIC_URL$/,
	/^SECRET$/,
	/^KEY$/,
	/^DB_/,
	/^ADMIN_/,
	/^ACCESS_TOKEN_/,
	/^REFRESH_TOKEN_/,
	/^SESSION_COOKIE_/,
	/^SESSION_REFRESH_/,
	/^HASH_/,
	/^LOGIN_STALL_TIME$/,
	/^AUTH_/,
	/^CORS_/,
	/^RATE_LIMITER_/,
	/^REDIS/,
	/^IP_/,
	/^EMAIL_/,
	/^PASSWORD_RESET_/,
	/^USER_REGISTER_/,
];

/** Random URL-safe string of exactly `length` characters. */
export function randomString(length) {
	return randomBytes(Math.ceil((length * 3) / 4) + 3)
		.toString('base64url')
		.slice(0, length);
}

function resolveBinary() {
	const raw = process.env.TESSERA_BIN;
	if (!raw || raw.trim() === '') {
		throw new Error(
			'TESSERA_BIN is not set. Build the server (e.g. `cargo build -p tessera`) and run ' +
				'`TESSERA_BIN=target/debug/tessera npm test` from tests/sdk ' +
				'(relative paths are resolved against the current directory, then the repository root).',
		);
	}
	// A bare command name ("tessera") is looked up on PATH by spawn().
	if (!raw.includes('/') && !raw.includes(path.sep)) return raw;

	const candidates = path.isAbsolute(raw)
		? [raw]
		: [...new Set([path.resolve(process.cwd(), raw), path.resolve(process.env.INIT_CWD ?? process.cwd(), raw), path.resolve(REPO_ROOT, raw)])];
	for (const candidate of candidates) {
		try {
			accessSync(candidate, fsConstants.X_OK);
			return candidate;
		} catch {
			// try the next one
		}
	}
	throw new Error(`TESSERA_BIN=${raw} is not an executable file (tried: ${candidates.join(', ')}).`);
}

function buildEnv(base, overrides) {
	const env = {};
	for (const [key, value] of Object.entries(process.env)) {
		if (STRIPPED_ENV.some((re) => re.test(key))) continue;
		env[key] = value;
	}
	Object.assign(env, base);
	for (const [key, value] of Object.entries(overrides)) {
		if (value === undefined || value === null) delete env[key];
		else env[key] = String(value);
	}
	return env;
}

const PG_ADMIN = process.env.TESSERA_TEST_PG || 'host=127.0.0.1 port=5432 user=postgres dbname=postgres';

/** Runs one statement on the PostgreSQL server as its administrator. */
function psql(sql) {
	execFileSync('psql', [PG_ADMIN, '-v', 'ON_ERROR_STOP=1', '-q', '-c', sql], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * The database settings for a fresh server: a new PostgreSQL database under
 * TESSERA_TEST_DB=pg, else a SQLite file in `dir`. `drop` removes what was made.
 */
function freshDatabase(dir) {
	if (process.env.TESSERA_TEST_DB !== 'pg') {
		return { env: { DB_FILENAME: path.join(dir, 'data.db') }, drop: () => {} };
	}
	const name = `tessera_sdk_${randomBytes(8).toString('hex')}`;
	psql(`CREATE DATABASE ${name}`);
	const conninfo = PG_ADMIN.split(/\s+/)
		.filter((part) => part && !part.startsWith('dbname='))
		.concat([`dbname=${name}`])
		.join(' ');
	return {
		env: { DB_CLIENT: 'pg', DB_CONNECTION_STRING: conninfo, DB_POOL__MIN: '1' },
		drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
	};
}

/**
 * Spawn `$TESSERA_BIN serve` on a random port with a fresh database.
 *
 * @param {Record<string, string|number|undefined>} overrides extra/overriding env vars
 *        (a value of `undefined` removes the variable).
 * @returns {Promise<{url: string, adminEmail: string, adminPassword: string,
 *          stop: () => Promise<void>, stderr: () => string, stdoutLines: string[], env: object}>}
 */
export async function startServer(overrides = {}) {
	const bin = resolveBinary();
	const dir = await mkdtemp(path.join(tmpdir(), 'tessera-sdk-'));

	const adminEmail = 'admin@example.com';
	const adminPassword = randomString(24);
	const database = freshDatabase(dir);
	const env = buildEnv(
		{
			HOST: '127.0.0.1',
			PORT: '0',
			...database.env,
			SECRET: randomString(48),
			ADMIN_EMAIL: adminEmail,
			ADMIN_PASSWORD: adminPassword,
			LOGIN_STALL_TIME: '0',
			HASH_MEMORY_COST: '1024',
			HASH_TIME_COST: '1',
			HASH_PARALLELISM: '1',
		},
		overrides,
	);

	let stderr = '';
	const stdoutLines = [];
	let stdoutBuf = '';

	let child;
	try {
		child = spawn(bin, ['serve'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
	} catch (err) {
		await rm(dir, { recursive: true, force: true });
		database.drop();
		throw err;
	}

	const exited = new Promise((resolve) => {
		child.once('close', (code, signal) => resolve({ code, signal }));
	});
	let exitInfo = null;
	exited.then((info) => {
		exitInfo = info;
	});

	child.stderr.setEncoding('utf8');
	child.stderr.on('data', (chunk) => {
		if (process.env.TESSERA_DEBUG) process.stderr.write(chunk);
		stderr += chunk;
		if (stderr.length > STDERR_LIMIT) stderr = stderr.slice(-STDERR_LIMIT);
	});

	let cleanedUp = false;
	const cleanup = async () => {
		if (cleanedUp) return;
		cleanedUp = true;
		if (exitInfo === null) {
			child.kill('SIGTERM');
			const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
			await exited;
			clearTimeout(timer);
		}
		await rm(dir, { recursive: true, force: true });
		database.drop();
	};

	const describeFailure = (what) =>
		`${what}\n  binary: ${bin}\n  stdout: ${JSON.stringify(stdoutLines)}\n  --- server stderr ---\n${stderr || '(empty)'}\n  --- end stderr ---`;

	let url;
	try {
		url = await new Promise((resolve, reject) => {
			const timer = setTimeout(
				() => reject(new Error(describeFailure(`Tessera did not print its "listening" line within ${READY_TIMEOUT_MS / 1000} s.`))),
				READY_TIMEOUT_MS,
			);
			child.once('error', (err) => {
				clearTimeout(timer);
				reject(new Error(describeFailure(`Could not spawn Tessera: ${err.message}`)));
			});
			exited.then(({ code, signal }) => {
				clearTimeout(timer);
				reject(new Error(describeFailure(`Tessera exited before it was ready (code ${code}, signal ${signal}).`)));
			});
			child.stdout.setEncoding('utf8');
			child.stdout.on('data', (chunk) => {
				stdoutBuf += chunk;
				let nl;
				while ((nl = stdoutBuf.indexOf('\n')) !== -1) {
					const line = stdoutBuf.slice(0, nl).replace(/\r$/, '');
					stdoutBuf = stdoutBuf.slice(nl + 1);
					stdoutLines.push(line);
					const m = READY_LINE.exec(line);
					if (m) {
						clearTimeout(timer);
						resolve(m[1]);
					}
				}
			});
		});
	} catch (err) {
		await cleanup();
		throw err;
	}

	return {
		url,
		adminEmail,
		adminPassword,
		env,
		stdoutLines,
		stderr: () => stderr,
		stop: cleanup,
	};
}
