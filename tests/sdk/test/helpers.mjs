// Shared helpers: raw HTTP calls, JWT decoding, a tiny cookie jar, assertions.
//
// Note: on Node 20, `node --test test/` also runs this module as a "test file";
// it defines no tests, so it shows up as a passing entry.

import assert from 'node:assert/strict';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Decode a JWT's payload (no signature check). Asserts the 3-part shape. */
export function decodeJwt(token) {
	assert.equal(typeof token, 'string', `expected a JWT string, got ${typeof token}`);
	const parts = token.split('.');
	assert.equal(parts.length, 3, `expected a JWT with 3 dot-separated parts, got ${parts.length}: ${token}`);
	const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
	const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
	return { header, payload };
}

/** Assert `token` is a Directus-style JWT and return its payload. */
export function assertDirectusJwt(token) {
	const { header, payload } = decodeJwt(token);
	assert.equal(header.typ ?? 'JWT', 'JWT');
	assert.equal(payload.iss, 'directus', `JWT iss must be "directus": ${JSON.stringify(payload)}`);
	assert.equal(typeof payload.iat, 'number', 'JWT must carry iat');
	assert.equal(typeof payload.exp, 'number', 'JWT must carry exp');
	return payload;
}

/**
 * JWTs without a unique claim are identical when issued in the same second for the
 * same user (that is also true for Directus). Before asserting "refresh gave a new
 * access token", wait until the clock is past the old token's `iat` second.
 */
export async function waitForNextJwtSecond(token) {
	const { payload } = decodeJwt(token);
	const waitMs = (payload.iat + 1) * 1000 - Date.now() + 50;
	if (waitMs > 0) await sleep(waitMs);
}

/**
 * Plain fetch against the server. Returns status, headers, parsed JSON body (or null),
 * raw text and the list of Set-Cookie header values.
 */
export async function raw(baseUrl, path, { method = 'GET', body, headers = {} } = {}) {
	const init = { method, headers: { ...headers } };
	if (body !== undefined) {
		init.body = typeof body === 'string' ? body : JSON.stringify(body);
		if (!Object.keys(init.headers).some((h) => h.toLowerCase() === 'content-type')) {
			init.headers['Content-Type'] = 'application/json';
		}
	}
	const res = await fetch(new URL(path, baseUrl), init);
	const text = await res.text();
	let json = null;
	if (text !== '') {
		try {
			json = JSON.parse(text);
		} catch {
			json = null;
		}
	}
	return { status: res.status, headers: res.headers, json, text, setCookies: res.headers.getSetCookie() };
}

/**
 * Await an SDK call; if it throws, rethrow with the HTTP status and body details.
 * (A bare RequestError can have an empty message, e.g. when a 204 response carries
 * `Content-Type: application/json` and the SDK fails to parse the empty body.)
 */
export async function explain(what, promise) {
	try {
		return await promise;
	} catch (err) {
		const status = err?.response?.status;
		const type = err?.response?.headers?.get?.('content-type');
		const errors = err?.errors instanceof Error ? `${err.errors.name}: ${err.errors.message}` : JSON.stringify(err?.errors);
		throw new Error(`${what} failed: ${err?.message || '(no message)'}; status=${status}; content-type=${type}; errors=${errors}`, { cause: err });
	}
}

/** Assert a raw response is a Directus error with the given status and code. */
export function assertRawError(res, status, code) {
	const ctx = `${status} ${code} expected, got ${res.status}: ${res.text}`;
	assert.equal(res.status, status, ctx);
	assert.match(res.headers.get('content-type') ?? '', /^application\/json/, `error content-type (${ctx})`);
	assert.ok(Array.isArray(res.json?.errors) && res.json.errors.length > 0, `body.errors[] (${ctx})`);
	assert.equal(typeof res.json.errors[0].message, 'string', `errors[0].message (${ctx})`);
	assert.equal(res.json.errors[0].extensions?.code, code, ctx);
}

/**
 * Assert `promise` rejects with the SDK's RequestError carrying a Directus error
 * with the given HTTP status and extensions.code. Returns the error.
 */
export async function assertSdkError(promise, status, code) {
	let error;
	try {
		await promise;
	} catch (err) {
		error = err;
	}
	assert.ok(error, `expected the SDK call to throw ${status} ${code}, but it resolved`);
	const detail = () => `${error?.message} / errors=${JSON.stringify(error?.errors)} / status=${error?.response?.status}`;
	assert.ok(Array.isArray(error.errors), `SDK error must carry .errors[] (the server must answer JSON): ${detail()}`);
	assert.equal(error.errors[0]?.extensions?.code, code, detail());
	assert.ok(error.response, `SDK error must carry .response: ${detail()}`);
	assert.equal(error.response.status, status, detail());
	return error;
}

/** Parse one Set-Cookie header value into {name, value, attrs} (attr names lower-cased). */
export function parseSetCookie(header) {
	const [pair, ...rest] = header.split(';');
	const eq = pair.indexOf('=');
	const name = (eq === -1 ? pair : pair.slice(0, eq)).trim();
	const value = eq === -1 ? '' : pair.slice(eq + 1).trim();
	const attrs = {};
	for (const part of rest) {
		const i = part.indexOf('=');
		const key = (i === -1 ? part : part.slice(0, i)).trim().toLowerCase();
		if (!key) continue;
		attrs[key] = i === -1 ? true : part.slice(i + 1).trim();
	}
	return { name, value, attrs };
}

function isDeletion({ value, attrs }) {
	if (value === '') return true;
	if (attrs['max-age'] !== undefined && Number(attrs['max-age']) <= 0) return true;
	if (typeof attrs.expires === 'string') {
		const t = Date.parse(attrs.expires);
		if (!Number.isNaN(t) && t <= Date.now()) return true;
	}
	return false;
}

/**
 * A fetch that behaves like a browser talking to one origin: it remembers cookies
 * from Set-Cookie (name -> value; a cookie is dropped when set to an empty value or
 * expired) and sends them back in a `Cookie` header. It also logs every exchange so
 * tests can inspect exactly what the SDK sent and received.
 */
export function createCookieFetch() {
	const jar = new Map();
	/** @type {{url: string, method: string, headers: Record<string,string>, body: any, status: number, setCookies: string[]}[]} */
	const log = [];

	async function cookieFetch(input, init = {}) {
		const headers = new Headers(init.headers ?? {});
		if (jar.size > 0 && !headers.has('cookie')) {
			headers.set('cookie', [...jar].map(([k, v]) => `${k}=${v}`).join('; '));
		}
		const res = await globalThis.fetch(input, { ...init, headers });
		const setCookies = res.headers.getSetCookie();
		for (const header of setCookies) {
			const cookie = parseSetCookie(header);
			if (isDeletion(cookie)) jar.delete(cookie.name);
			else jar.set(cookie.name, cookie.value);
		}
		let body = init.body;
		if (typeof body === 'string') {
			try {
				body = JSON.parse(body);
			} catch {
				// keep the raw string
			}
		}
		log.push({
			url: String(input),
			method: init.method ?? 'GET',
			headers: Object.fromEntries(headers.entries()),
			body,
			status: res.status,
			setCookies,
		});
		return res;
	}

	return {
		fetch: cookieFetch,
		jar,
		log,
		/** Last logged exchange whose URL path equals `path` (e.g. '/auth/login'). */
		last(path) {
			for (let i = log.length - 1; i >= 0; i--) {
				if (new URL(log[i].url).pathname === path) return log[i];
			}
			return undefined;
		},
	};
}

/** An AuthenticationStorage we can peek into (same semantics as the SDK's memoryStorage). */
export function inspectableStorage() {
	let value = null;
	return {
		get: async () => value,
		set: async (v) => {
			value = v;
		},
		peek: () => value,
	};
}
