// The subset of Keycloak 26's Admin REST API that services/identity uses (through python-keycloak's
// KeycloakAdmin), at Keycloak's paths: users, realm role mappings, organizations and their members.
// Only the services client's service account may call it. Users made here sign in with the dev
// password; required actions are recorded but, unlike Keycloak, not asked for at sign-in.
import { REALM, SERVICES_CLIENT_ID } from './config.mjs';
import { DEFAULT_ROLES, subFor, uuidv5 } from './users.mjs';

export const REALM_ROLES = ['operator', 'network_admin', 'counselor', 'provider', 'employer'];

function roleRepresentation(name) {
  return { id: uuidv5(`urn:bildungsraum:dev-issuer:role:${name}`), name, composite: false, clientRole: false, containerId: 'bildungsraum' };
}

function orgId(alias) {
  return uuidv5(`urn:bildungsraum:dev-issuer:organization:${alias}`);
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Admin API over the issuer's directory (seeded users plus those made here) and organizations. */
function sendJson(res, status, body, headers = {}) {
  const data = body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(body));
  res.writeHead(status, {
    ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    'Content-Length': data.length,
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(data);
}

export function createAdmin({ cfg, directory, verifyJwt }) {
  const organizations = new Map(); // id -> {id, name, alias, enabled, description, attributes, domains}
  for (const t of cfg.tenants) {
    organizations.set(orgId(t), {
      id: orgId(t), name: t, alias: t, enabled: true, description: '', attributes: {}, domains: [],
    });
  }
  const byAlias = (alias) => [...organizations.values()].find((o) => o.alias === alias);

  function userRepresentation(u) {
    const attributes = { ...(u.attributes || {}) };
    if (u.providers?.length) attributes.providers = [...u.providers];
    if (u.firm) attributes.firm = [u.firm];
    return {
      id: u.sub,
      username: u.username,
      email: u.email,
      firstName: u.firstName ?? '',
      lastName: u.lastName ?? '',
      enabled: u.enabled !== false,
      emailVerified: u.emailVerified ?? true,
      attributes,
      requiredActions: u.requiredActions ?? [],
      createdTimestamp: u.createdTimestamp ?? 0,
    };
  }

  function applyRepresentation(u, rep) {
    if (rep.email !== undefined) u.email = String(rep.email).toLowerCase();
    if (rep.firstName !== undefined) u.firstName = String(rep.firstName);
    if (rep.lastName !== undefined) u.lastName = String(rep.lastName);
    if (rep.enabled !== undefined) u.enabled = Boolean(rep.enabled);
    if (rep.emailVerified !== undefined) u.emailVerified = Boolean(rep.emailVerified);
    if (Array.isArray(rep.requiredActions)) u.requiredActions = rep.requiredActions.map(String);
    if (rep.attributes && typeof rep.attributes === 'object') {
      const attrs = Object.fromEntries(Object.entries(rep.attributes).map(([k, v]) => [k, (Array.isArray(v) ? v : [v]).map(String)]));
      u.providers = attrs.providers ?? [];
      u.firm = attrs.firm?.[0];
      delete attrs.providers;
      delete attrs.firm;
      u.attributes = attrs;
    }
  }

  function requireServiceAccount(req) {
    const auth = req.headers.authorization || '';
    const claims = /^bearer /i.test(auth) ? verifyJwt(auth.slice(7).trim()) : undefined;
    if (!claims) throw new HttpError(401, 'HTTP 401 Unauthorized');
    if (claims.client_id !== SERVICES_CLIENT_ID) throw new HttpError(403, 'HTTP 403 Forbidden');
  }

  function userOr404(id) {
    const u = directory.bySub.get(id);
    if (!u) throw new HttpError(404, 'User not found');
    return u;
  }

  function orgOr404(id) {
    const o = organizations.get(id);
    if (!o) throw new HttpError(404, 'Organization not found');
    return o;
  }

  function page(list, query) {
    const first = Number(query.get('first') || 0);
    const max = query.has('max') ? Number(query.get('max')) : 100;
    return list.slice(first, first + max);
  }

  // [method, path regexp, handler(req, res, match, query)]
  const routes = [
    ['GET', /^\/users$/, (req, res, m, q) => {
      let list = directory.users.filter((u) => !u.deleted);
      const username = q.get('username');
      if (username !== null) {
        const exact = q.get('exact') === 'true';
        list = list.filter((u) => (exact ? u.username === username.toLowerCase() : u.username.includes(username.toLowerCase())));
      }
      const email = q.get('email');
      if (email !== null) list = list.filter((u) => u.email === email.toLowerCase());
      return sendJson(res, 200, page(list, q).map(userRepresentation));
    }],
    ['POST', /^\/users$/, async (req, res) => {
      const rep = await readJson(req);
      const username = String(rep.username || '').toLowerCase();
      if (!/^[a-z0-9._@-]{1,255}$/.test(username)) throw new HttpError(400, 'invalid username');
      if (directory.byName(username)) throw new HttpError(409, 'User exists with same username');
      if (rep.email && directory.users.some((u) => u.email === String(rep.email).toLowerCase())) {
        throw new HttpError(409, 'User exists with same email');
      }
      const u = {
        username, sub: subFor(username), email: `${username}@bildungsraum.example`, roles: [], tenant: undefined,
        providers: [], firm: undefined, createdTimestamp: Date.now(),
      };
      applyRepresentation(u, rep);
      directory.add(u);
      return sendJson(res, 201, undefined, { Location: `${cfg.origin}/admin/realms/${REALM}/users/${u.sub}` });
    }],
    ['GET', /^\/users\/([^/]+)$/, (req, res, m) => sendJson(res, 200, userRepresentation(userOr404(m[1])))],
    ['PUT', /^\/users\/([^/]+)$/, async (req, res, m) => {
      applyRepresentation(userOr404(m[1]), await readJson(req));
      return sendJson(res, 204);
    }],
    ['DELETE', /^\/users\/([^/]+)$/, (req, res, m) => {
      directory.remove(userOr404(m[1]).sub);
      return sendJson(res, 204);
    }],
    ['PUT', /^\/users\/([^/]+)\/execute-actions-email$/, async (req, res, m) => {
      const u = userOr404(m[1]);
      const actions = await readJson(req);
      u.actionsEmailed = Array.isArray(actions) ? actions.map(String) : [];
      return sendJson(res, 204);
    }],
    ['GET', /^\/roles\/([^/]+)$/, (req, res, m) => {
      const name = decodeURIComponent(m[1]);
      if (!REALM_ROLES.includes(name) && name !== DEFAULT_ROLES) throw new HttpError(404, 'Could not find role');
      return sendJson(res, 200, roleRepresentation(name));
    }],
    ['GET', /^\/users\/([^/]+)\/role-mappings\/realm$/, (req, res, m) => {
      const u = userOr404(m[1]);
      return sendJson(res, 200, [...directory.rolesOf(u), DEFAULT_ROLES].map(roleRepresentation));
    }],
    ['POST', /^\/users\/([^/]+)\/role-mappings\/realm$/, async (req, res, m) => {
      const u = userOr404(m[1]);
      const roles = await readJson(req);
      if (!Array.isArray(roles)) throw new HttpError(400, 'expected a list of roles');
      for (const r of roles) {
        if (!REALM_ROLES.includes(r?.name)) throw new HttpError(404, 'Could not find role');
      }
      u.roles = [...new Set([...directory.rolesOf(u), ...roles.map((r) => r.name)])];
      return sendJson(res, 204);
    }],
    ['GET', /^\/organizations$/, (req, res, m, q) => {
      let list = [...organizations.values()];
      const search = q.get('search');
      if (search) {
        const exact = q.get('exact') === 'true';
        list = list.filter((o) => (exact ? o.name === search || o.alias === search : o.name.includes(search) || o.alias.includes(search)));
      }
      return sendJson(res, 200, page(list, q));
    }],
    ['POST', /^\/organizations$/, async (req, res) => {
      const rep = await readJson(req);
      const alias = String(rep.alias || rep.name || '');
      if (!/^[a-z0-9][a-z0-9-]{1,62}$/.test(alias) || !rep.name) throw new HttpError(400, 'invalid organization');
      if (byAlias(alias) || [...organizations.values()].some((o) => o.name === rep.name)) {
        throw new HttpError(409, 'A organization with the same name already exists.');
      }
      const o = {
        id: orgId(alias), name: String(rep.name), alias, enabled: rep.enabled !== false,
        description: String(rep.description || ''), attributes: rep.attributes || {}, domains: rep.domains || [],
      };
      organizations.set(o.id, o);
      return sendJson(res, 201, undefined, { Location: `${cfg.origin}/admin/realms/${REALM}/organizations/${o.id}` });
    }],
    ['GET', /^\/organizations\/([^/]+)$/, (req, res, m) => sendJson(res, 200, orgOr404(m[1]))],
    ['PUT', /^\/organizations\/([^/]+)$/, async (req, res, m) => {
      const o = orgOr404(m[1]);
      const rep = await readJson(req);
      for (const key of ['name', 'description', 'enabled', 'attributes', 'domains']) {
        if (rep[key] !== undefined) o[key] = rep[key];
      }
      return sendJson(res, 204);
    }],
    ['GET', /^\/organizations\/([^/]+)\/members$/, (req, res, m, q) => {
      const o = orgOr404(m[1]);
      return sendJson(res, 200, page(directory.users.filter((u) => u.tenant === o.alias), q).map(userRepresentation));
    }],
    ['POST', /^\/organizations\/([^/]+)\/members$/, async (req, res, m) => {
      const o = orgOr404(m[1]);
      const raw = (await readRaw(req)).trim();
      const id = raw.startsWith('"') ? JSON.parse(raw) : raw; // Keycloak takes the id as the bare body
      const u = userOr404(id);
      if (u.tenant && u.tenant !== o.alias) throw new HttpError(409, 'User is already a member of another organization');
      u.tenant = o.alias;
      return sendJson(res, 201);
    }],
    ['DELETE', /^\/organizations\/([^/]+)\/members\/([^/]+)$/, (req, res, m) => {
      const o = orgOr404(m[1]);
      const u = userOr404(m[2]);
      if (u.tenant !== o.alias) throw new HttpError(404, 'User is not a member of the organization');
      u.tenant = undefined;
      return sendJson(res, 204);
    }],
    ['GET', /^\/organizations\/members\/([^/]+)\/organizations$/, (req, res, m) => {
      const u = userOr404(m[1]);
      const o = u.tenant ? byAlias(u.tenant) : undefined;
      return sendJson(res, 200, o ? [o] : []);
    }],
  ];

  async function readRaw(req, limit = 64 * 1024) {
    const chunks = [];
    let size = 0;
    for await (const chunk of req) {
      size += chunk.length;
      if (size > limit) throw new HttpError(413, 'request body too large');
      chunks.push(chunk);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  async function readJson(req) {
    const raw = await readRaw(req);
    if (!raw) return {};
    try {
      return JSON.parse(raw);
    } catch {
      throw new HttpError(400, 'invalid JSON');
    }
  }

  const prefix = `/admin/realms/${REALM}`;
  return {
    prefix,
    organizationAliasOf: (alias) => byAlias(alias),
    /** Handle an admin request, or return false when the path is not the admin API's. */
    async handle(req, res, path, query) {
      if (!path.startsWith(`${prefix}/`)) return false;
      const rest = path.slice(prefix.length);
      try {
        requireServiceAccount(req);
        for (const [method, re, handler] of routes) {
          const m = rest.match(re);
          if (m && method === req.method) {
            await handler(req, res, m, query);
            return true;
          }
        }
        throw new HttpError(404, 'HTTP 404 Not Found');
      } catch (err) {
        if (!(err instanceof HttpError)) throw err;
        sendJson(res, err.status, { errorMessage: err.message, error: err.message });
        return true;
      }
    },
  };
}
