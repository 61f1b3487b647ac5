#!/usr/bin/env node
// Bildungsraum dev issuer: a local stand-in for Keycloak 26 (realm `bildungsraum`), for dev and
// test only. See README.md. oidc-provider is loaded only after the environment guard passed.
import * as crypto from 'node:crypto';
import * as http from 'node:http';

import {
  ALLOWED_ENVS, ConfigError, SERVICES_CLIENT_ID, loadConfig,
} from './config.mjs';
import { createAdmin } from './admin.mjs';
import { readForm } from './forms.mjs';
import { loadOrCreateKeys, publicJwk } from './keys.mjs';
import { portalLoginRoutes } from './portal-login.mjs';
import { DEFAULT_ROLES, buildDirectory, userClaims } from './users.mjs';

function fail(message) {
  process.stderr.write(`dev-issuer: ${message}\n`);
  process.exit(2);
}

const brEnv = process.env.BR_ENV;
if (!ALLOWED_ENVS.has(brEnv)) {
  fail(`refusing to start: BR_ENV is ${brEnv === undefined ? 'unset' : JSON.stringify(brEnv)}; `
    + 'the dev issuer has well-known passwords and runs only with BR_ENV=dev or BR_ENV=test');
}

let cfg;
let jwks;
let created;
let directory;
try {
  cfg = loadConfig();
  ({ jwks, created } = loadOrCreateKeys(cfg.keysFile));
  directory = buildDirectory(cfg.tenants);
} catch (err) {
  if (err instanceof ConfigError) fail(err.message);
  throw err;
}

// oidc-provider 9 prints one warning at import on Node < 22; let it pass but keep it to one line.
const { createProvider, KEYCLOAK_ROUTES } = await import('./provider.mjs');

const provider = createProvider(cfg, structuredClone(jwks), directory);
const providerCallback = provider.callback();
const portalLogin = portalLoginRoutes(provider, directory, cfg.realmPath);

const signingKeys = new Map(jwks.keys.map((k) => [k.kid, crypto.createPublicKey({ key: publicJwk(k), format: 'jwk' })]));

function log(fields) {
  process.stdout.write(`${JSON.stringify({ ts: new Date().toISOString(), ...fields })}\n`);
}

function sendJson(res, status, body, headers = {}) {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': data.length,
    'Cache-Control': 'no-store',
    Pragma: 'no-cache',
    ...headers,
  });
  res.end(data);
}

function b64json(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

/** Claims of a JWT this issuer signed and that is valid now, else undefined. */
function verifyJwt(token) {
  if (typeof token !== 'string') return undefined;
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const header = b64json(parts[0]);
    if (header.alg !== 'RS256' || typeof header.kid !== 'string') return undefined;
    const key = signingKeys.get(header.kid);
    if (!key) return undefined;
    const ok = crypto.verify(
      'RSA-SHA256',
      Buffer.from(`${parts[0]}.${parts[1]}`),
      key,
      Buffer.from(parts[2], 'base64url'),
    );
    if (!ok) return undefined;
    const claims = b64json(parts[1]);
    const now = Math.floor(Date.now() / 1000);
    if (claims.iss !== cfg.issuer) return undefined;
    if (typeof claims.exp !== 'number' || claims.exp <= now) return undefined;
    if (typeof claims.nbf === 'number' && claims.nbf > now + 5) return undefined;
    return claims;
  } catch {
    return undefined;
  }
}

function constantEquals(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

/** client_secret_basic or client_secret_post for the confidential client; else undefined. */
function authenticateClient(req, form) {
  let id;
  let secret;
  const auth = req.headers.authorization || '';
  if (/^basic /i.test(auth)) {
    const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i < 0) return undefined;
    id = decodeURIComponent(decoded.slice(0, i).replace(/\+/g, '%20'));
    secret = decodeURIComponent(decoded.slice(i + 1).replace(/\+/g, '%20'));
  } else {
    id = form.get('client_id');
    secret = form.get('client_secret');
  }
  if (id === SERVICES_CLIENT_ID && secret != null && constantEquals(secret, cfg.servicesSecret)) return id;
  return undefined;
}

// RFC 7662 introspection, answered as Keycloak does: the token's claims plus active etc.
async function introspect(req, res) {
  const form = await readForm(req);
  const client = authenticateClient(req, form);
  if (!client) {
    return sendJson(res, 401, { error: 'invalid_client', error_description: 'Invalid client or Invalid client credentials' });
  }
  const token = form.get('token');
  if (!token) return sendJson(res, 400, { error: 'invalid_request', error_description: 'Token not provided' });

  const claims = verifyJwt(token);
  if (claims) {
    return sendJson(res, 200, {
      ...claims,
      client_id: claims.azp,
      username: claims.preferred_username,
      token_type: 'Bearer',
      active: true,
    });
  }
  const rt = await provider.RefreshToken.find(token).catch(() => undefined);
  if (rt?.isValid) {
    const u = directory.bySub.get(rt.accountId);
    return sendJson(res, 200, {
      exp: rt.exp,
      iat: rt.iat,
      jti: rt.jti,
      iss: cfg.issuer,
      aud: cfg.issuer,
      sub: rt.accountId,
      typ: 'Refresh',
      azp: rt.clientId,
      scope: rt.scope,
      client_id: rt.clientId,
      username: u?.username,
      token_type: 'Refresh',
      active: true,
    });
  }
  return sendJson(res, 200, { active: false });
}

function bearerError(res, status, error, description) {
  return sendJson(res, status, { error, error_description: description }, {
    'WWW-Authenticate': `Bearer realm="bildungsraum", error="${error}", error_description="${description}"`,
  });
}

async function userinfo(req, res) {
  let token;
  const auth = req.headers.authorization || '';
  if (/^bearer /i.test(auth)) token = auth.slice(7).trim();
  else if (req.method === 'POST') token = (await readForm(req)).get('access_token') || undefined;
  if (!token) return bearerError(res, 401, 'invalid_request', 'Token not provided');

  const claims = verifyJwt(token);
  if (!claims || claims.typ !== 'Bearer') return bearerError(res, 401, 'invalid_token', 'Token verification failed');
  if (!String(claims.scope || '').split(' ').includes('openid')) {
    return bearerError(res, 403, 'insufficient_scope', 'Missing openid scope');
  }
  const u = directory.bySub.get(claims.sub);
  if (!u) return bearerError(res, 401, 'invalid_token', 'User not found');
  const { realm_access: _roles, ...rest } = userClaims(u);
  return sendJson(res, 200, { sub: u.sub, ...rest });
}

const admin = createAdmin({ cfg, directory, verifyJwt });

const prefix = cfg.realmPath;
const ownRoutes = new Map([
  [`POST ${prefix}${KEYCLOAK_ROUTES.introspection}`, introspect],
  [`GET ${prefix}${KEYCLOAK_ROUTES.userinfo}`, userinfo],
  [`POST ${prefix}${KEYCLOAK_ROUTES.userinfo}`, userinfo],
]);

const server = http.createServer((req, res) => {
  const started = process.hrtime.bigint();
  const path = (req.url || '/').split('?')[0];
  res.on('finish', () => {
    log({
      level: 'info',
      msg: 'request',
      method: req.method,
      path,
      status: res.statusCode,
      duration_ms: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
    });
  });

  if (path === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
    return sendJson(res, 200, { status: 'ok', issuer: cfg.issuer });
  }
  if (path.startsWith(`${admin.prefix}/`)) {
    const query = new URL(req.url || '/', 'http://x').searchParams;
    return admin.handle(req, res, path, query).catch((err) => {
      log({ level: 'error', msg: 'admin handler failed', path, error: String(err?.stack || err) });
      if (!res.headersSent) sendJson(res, 500, { error: 'unknown_error' });
    });
  }
  if (path.startsWith(`${cfg.realmPath}/login-actions/`)) {
    return portalLogin(req, res, path).catch((err) => {
      log({ level: 'error', msg: 'login page failed', path, error: String(err?.stack || err) });
      if (!res.headersSent) sendJson(res, err.status && err.status < 500 ? err.status : 500, { error: 'invalid_request' });
    });
  }
  const own = ownRoutes.get(`${req.method} ${path}`);
  if (own) {
    return own(req, res).catch((err) => {
      const status = err.status && err.status < 500 ? err.status : 500;
      if (status === 500) log({ level: 'error', msg: 'handler failed', path, error: String(err?.stack || err) });
      if (!res.headersSent) sendJson(res, status, { error: status === 500 ? 'server_error' : 'invalid_request', error_description: err.message });
    });
  }
  if (path === prefix || path.startsWith(`${prefix}/`)) {
    // Mount oidc-provider under the realm path: it routes on the rest and derives its
    // mount path from originalUrl (the way express or koa-mount hand it over).
    req.originalUrl = req.url;
    req.url = req.url.slice(prefix.length) || '/';
    return providerCallback(req, res);
  }
  return sendJson(res, 404, { error: 'not_found', error_description: `no route for ${req.method} ${path}` });
});

provider.on('server_error', (_ctx, err) => log({ level: 'error', msg: 'oidc-provider server_error', error: String(err?.stack || err) }));

server.on('error', (err) => {
  process.stderr.write(`dev-issuer: cannot listen on ${cfg.host}:${cfg.port}: ${err.message}\n`);
  process.exit(1);
});

server.listen(cfg.port, cfg.host, () => {
  log({
    level: 'info',
    msg: 'dev issuer listening',
    issuer: cfg.issuer,
    env: brEnv,
    keys_file: cfg.keysFile,
    keys_created: created,
    kid: jwks.keys[0].kid,
    tenants: cfg.tenants,
    users: directory.users.length,
    default_roles: DEFAULT_ROLES,
  });
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
