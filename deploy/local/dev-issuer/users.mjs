// Seeded dev identities. Password `dev` for all; `sub` is a UUIDv5 of the username so it is
// the same on every machine: uuid5(NAMESPACE_URL, "urn:bildungsraum:dev-issuer:user:<username>").
import * as crypto from 'node:crypto';

import { DEV_PASSWORD, REALM } from './config.mjs';

const NAMESPACE_URL = '6ba7b811-9dad-11d1-80b4-00c04fd430c8';
export const DEFAULT_ROLES = `default-roles-${REALM}`;

export function uuidv5(name, namespace = NAMESPACE_URL) {
  const ns = Buffer.from(namespace.replace(/-/g, ''), 'hex');
  const hash = crypto.createHash('sha1').update(ns).update(Buffer.from(name, 'utf8')).digest();
  const b = hash.subarray(0, 16);
  b[6] = (b[6] & 0x0f) | 0x50;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function subFor(username) {
  return uuidv5(`urn:${REALM}:dev-issuer:user:${username}`);
}

// `providers` (catalog provider ids the user acts for) and `firm` (the employer's firm) are user
// attributes in Keycloak, put into tokens by attribute mappers; the dev issuer does the same.
function user(username, role, tenant, { providers = [], firm } = {}) {
  return {
    username,
    sub: subFor(username),
    email: `${username}@bildungsraum.example`,
    role,
    tenant,
    providers,
    firm,
  };
}

// [username suffix, role, attributes(tenant)]: two users per owner-bound role, so tests can show
// that one provider or firm cannot act for another of the same network.
const TENANT_USERS = [
  ['admin', 'network_admin', () => ({})],
  ['provider', 'provider', () => ({})],
  ['provider2', 'provider', () => ({})],
  ['employer', 'employer', (t) => ({ firm: `${t}-firma-1` })],
  ['employer2', 'employer', (t) => ({ firm: `${t}-firma-2` })],
  ['counselor', 'counselor', () => ({})],
];

export function buildDirectory(tenants) {
  const list = [user('operator', 'operator', undefined)];
  for (const t of tenants) {
    for (const [suffix, role, attributes] of TENANT_USERS) list.push(user(`${t}-${suffix}`, role, t, attributes(t)));
  }
  const byName = new Map(list.map((u) => [u.username, u]));
  const bySub = new Map(list.map((u) => [u.sub, u]));

  const expected = Buffer.from(DEV_PASSWORD);
  return {
    users: list,
    bySub,
    /** The user for these credentials, or undefined. */
    authenticate(username, password) {
      const u = typeof username === 'string' ? byName.get(username) : undefined;
      const given = Buffer.from(typeof password === 'string' ? password : '');
      const ok = given.length === expected.length && crypto.timingSafeEqual(given, expected);
      return u && ok ? u : undefined;
    },
  };
}

/** Claims that describe a user in tokens, userinfo and introspection (Keycloak 26 shape). */
export function userClaims(u) {
  return {
    realm_access: { roles: [u.role, DEFAULT_ROLES] },
    email_verified: true,
    ...(u.tenant ? { organization: [u.tenant] } : {}),
    preferred_username: u.username,
    email: u.email,
    ...(u.tenant ? { tenant: u.tenant } : {}),
    ...(u.providers?.length ? { providers: [...u.providers] } : {}),
    ...(u.firm ? { firm: u.firm } : {}),
  };
}
