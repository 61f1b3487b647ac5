// Environment configuration of the dev issuer. No third-party imports here, so the
// environment guard in server.mjs can run before oidc-provider is loaded.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const REALM = 'bildungsraum';
export const API_AUDIENCE = 'bildungsraum-api';
// Resource indicator (RFC 8707) under which oidc-provider knows the API; the tokens carry
// API_AUDIENCE as `aud`, as Keycloak's audience mapper would put it.
export const API_RESOURCE = 'urn:bildungsraum:api';
export const CLI_CLIENT_ID = 'bildungsraum-cli';
export const SERVICES_CLIENT_ID = 'bildungsraum-services';
export const DEV_PASSWORD = 'dev';
export const REFRESH_TOKEN_TTL = 1800; // Keycloak's default SSO session idle
export const ALLOWED_ENVS = new Set(['dev', 'test']);

export class ConfigError extends Error {}

const TENANT_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

function positiveInt(name, raw, fallback, { max = Number.MAX_SAFE_INTEGER } = {}) {
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (n === 0 || n > max) throw new ConfigError(`${name} out of range: ${raw}`);
  return n;
}

// No secret in the repository: without DEV_ISSUER_SERVICES_SECRET the confidential client's secret
// is made on first start and kept beside the key file (mode 0600), like the keys themselves.
function servicesSecretBeside(keysFile) {
  const file = path.join(path.dirname(keysFile), 'services-client-secret');
  if (!fs.existsSync(file)) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, randomBytes(24).toString('base64url'), { mode: 0o600 });
  }
  return fs.readFileSync(file, 'utf8').trim();
}

export function loadConfig(env = process.env, cwd = process.cwd()) {
  const host = env.DEV_ISSUER_HOST || '127.0.0.1';
  const port = positiveInt('DEV_ISSUER_PORT', env.DEV_ISSUER_PORT, 8080, { max: 65535 });
  const keysFile = path.resolve(cwd, env.DEV_ISSUER_KEYS_FILE || 'var/dev-issuer/jwks.json');
  const tenants = (env.DEV_ISSUER_TENANTS ?? 'hellweg-hochsauerland,westfaelisches-ruhrgebiet,lueneburg')
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  for (const t of tenants) {
    if (!TENANT_RE.test(t)) throw new ConfigError(`DEV_ISSUER_TENANTS: invalid tenant alias ${JSON.stringify(t)}`);
  }
  if (new Set(tenants).size !== tenants.length) throw new ConfigError('DEV_ISSUER_TENANTS: duplicate tenant');
  const accessTokenTTL = positiveInt('DEV_ISSUER_ACCESS_TOKEN_TTL', env.DEV_ISSUER_ACCESS_TOKEN_TTL, 300);
  const servicesSecret = env.DEV_ISSUER_SERVICES_SECRET || servicesSecretBeside(keysFile);

  const hostForUrl = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  const origin = `http://${hostForUrl}:${port}`;
  const realmPath = `/realms/${REALM}`;
  return {
    host,
    port,
    keysFile,
    tenants,
    accessTokenTTL,
    servicesSecret,
    origin,
    realmPath,
    issuer: `${origin}${realmPath}`,
  };
}
