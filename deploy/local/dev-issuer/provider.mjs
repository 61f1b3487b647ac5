// oidc-provider set up as Keycloak 26's realm `bildungsraum`: Keycloak's routes, JWT access
// tokens shaped like Keycloak's (organization + tenant mappers), the password grant.
import * as crypto from 'node:crypto';

import Provider, { errors } from 'oidc-provider';

import MemoryAdapter from './adapter.mjs';
import { portalClient, portalProviderOptions } from './portal-login.mjs';
import {
  API_AUDIENCE,
  API_RESOURCE,
  CLI_CLIENT_ID,
  REFRESH_TOKEN_TTL,
  SERVICES_CLIENT_ID,
} from './config.mjs';
import { DEFAULT_ROLES, subFor, userClaims } from './users.mjs';

const OIDC_SCOPES = ['openid', 'profile', 'email'];
// Keycloak adds the default client scopes `profile` and `email` to every token.
const DEFAULT_SCOPES = ['profile', 'email'];

export const KEYCLOAK_ROUTES = {
  authorization: '/protocol/openid-connect/auth',
  token: '/protocol/openid-connect/token',
  jwks: '/protocol/openid-connect/certs',
  userinfo: '/protocol/openid-connect/userinfo',
  introspection: '/protocol/openid-connect/token/introspect',
  revocation: '/protocol/openid-connect/revoke',
  end_session: '/protocol/openid-connect/logout',
};

function grantedScope(requested) {
  const req = new Set(String(requested || '').split(' ').filter(Boolean));
  return OIDC_SCOPES.filter((s) => req.has(s) || DEFAULT_SCOPES.includes(s)).join(' ');
}

function invalidUserCredentials() {
  // Keycloak answers a failed password grant with 401, not RFC 6749's 400.
  const err = new errors.CustomOIDCProviderError('invalid_grant', 'Invalid user credentials');
  err.status = 401;
  err.statusCode = 401;
  return err;
}

export function serviceAccountName(clientId) {
  return `service-account-${clientId}`;
}

export function createProvider(cfg, jwks, directory) {
  const resourceServerInfo = {
    scope: OIDC_SCOPES.join(' '),
    audience: API_AUDIENCE,
    accessTokenTTL: cfg.accessTokenTTL,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };

  async function findAccount(_ctx, sub) {
    const u = directory.bySub.get(sub);
    if (!u) return undefined;
    return {
      accountId: u.sub,
      async claims() {
        return {
          sub: u.sub, preferred_username: u.username, email: u.email, email_verified: true,
        };
      },
    };
  }

  // Rewrite oidc-provider's RFC 9068 payload into Keycloak 26's access token shape.
  async function customizeJwt(_ctx, token, jwt) {
    const base = jwt.payload;
    const clientId = token.clientId;
    // As Keycloak: the default client scopes are always granted. Setting it on the token
    // also makes the token response's `scope` say so.
    const scope = grantedScope(token.scope);
    token.scope = scope;
    let subject;
    if (token.accountId) {
      const u = directory.bySub.get(token.accountId);
      if (!u) throw new Error('unknown account');
      const { realm_access: realmAccess, ...rest } = userClaims(u);
      subject = {
        sub: u.sub, typ: 'Bearer', azp: clientId, realm_access: realmAccess, scope, ...rest,
      };
    } else {
      const name = serviceAccountName(clientId);
      subject = {
        sub: subFor(name),
        typ: 'Bearer',
        azp: clientId,
        realm_access: { roles: [DEFAULT_ROLES] },
        scope,
        email_verified: false,
        client_id: clientId,
        preferred_username: name,
      };
    }
    jwt.header = { typ: 'JWT' };
    jwt.payload = {
      exp: base.exp,
      iat: base.iat,
      jti: base.jti,
      iss: base.iss,
      aud: [API_AUDIENCE],
      ...subject,
    };
  }

  const portalOptions = portalProviderOptions(cfg.realmPath);
  const provider = new Provider(cfg.issuer, {
    interactions: portalOptions.interactions,
    loadExistingGrant: portalOptions.loadExistingGrant,
    clients: [
      portalClient(),
      {
        client_id: CLI_CLIENT_ID,
        token_endpoint_auth_method: 'none',
        grant_types: ['password', 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      },
      {
        client_id: SERVICES_CLIENT_ID,
        client_secret: cfg.servicesSecret,
        token_endpoint_auth_method: 'client_secret_basic', // client_secret_post is accepted too
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    adapter: MemoryAdapter,
    jwks,
    findAccount,
    claims: {
      openid: ['sub'],
      profile: ['preferred_username'],
      email: ['email', 'email_verified'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    routes: KEYCLOAK_ROUTES,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // Served by server.mjs (oidc-provider will not introspect JWTs, nor serve userinfo for
      // tokens with an audience); enabled here so discovery lists them at Keycloak's paths.
      introspection: { enabled: true },
      userinfo: { enabled: true },
      revocation: { enabled: false },
      rpInitiatedLogout: portalOptions.rpInitiatedLogout,
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => API_RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (resource !== API_RESOURCE) throw new errors.InvalidTarget();
          return resourceServerInfo;
        },
      },
    },
    formats: { customizers: { jwt: customizeJwt } },
    ttl: {
      AccessToken: cfg.accessTokenTTL,
      ClientCredentials: cfg.accessTokenTTL,
      IdToken: cfg.accessTokenTTL,
      RefreshToken: REFRESH_TOKEN_TTL,
      Grant: REFRESH_TOKEN_TTL,
      Session: REFRESH_TOKEN_TTL,
      Interaction: 600,
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    // Non-JSON error pages are of no use here.
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  // Resource Owner Password Credentials, as Keycloak's "direct access grants".
  async function passwordGrant(ctx) {
    const { client, params } = ctx.oidc;
    const u = directory.authenticate(params.username, params.password);
    if (!u) throw invalidUserCredentials();

    const scope = grantedScope(params.scope);

    const grant = new provider.Grant({ accountId: u.sub, clientId: client.clientId });
    grant.addOIDCScope(scope);
    grant.addResourceScope(API_RESOURCE, scope);
    const grantId = await grant.save();
    ctx.oidc.entity('Grant', grant);

    const at = new provider.AccessToken({
      accountId: u.sub, client, grantId, gty: 'password', scope,
    });
    at.resourceServer = new provider.ResourceServer(API_RESOURCE, resourceServerInfo);
    ctx.oidc.entity('AccessToken', at);
    const accessToken = await at.save();

    let refreshToken;
    if (client.grantTypeAllowed('refresh_token')) {
      const rt = new provider.RefreshToken({
        accountId: u.sub,
        client,
        grantId,
        gty: 'password',
        resource: API_RESOURCE,
        rotations: 0,
        scope,
      });
      ctx.oidc.entity('RefreshToken', rt);
      refreshToken = await rt.save();
    }

    let idToken;
    if (scope.split(' ').includes('openid')) {
      const account = await findAccount(ctx, u.sub);
      const token = new provider.IdToken(await account.claims(), { ctx });
      token.scope = scope;
      token.set('typ', 'ID');
      token.set('azp', client.clientId);
      token.set('at_hash', accessToken);
      idToken = await token.issue({ use: 'idtoken' });
    }

    ctx.body = {
      access_token: accessToken,
      expires_in: at.expiration,
      ...(refreshToken ? { refresh_expires_in: REFRESH_TOKEN_TTL, refresh_token: refreshToken } : {}),
      token_type: 'Bearer',
      ...(idToken ? { id_token: idToken } : {}),
      'not-before-policy': 0,
      scope,
    };
  }
  provider.registerGrantType('password', passwordGrant, ['username', 'password', 'scope']);

  // Keycloak-shaped touches on oidc-provider's own responses.
  provider.use(async (ctx, next) => {
    await next();
    const route = ctx.oidc?.route;
    if (route === 'token' && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
      ctx.body['not-before-policy'] ??= 0;
      if (ctx.body.refresh_token) ctx.body.refresh_expires_in ??= REFRESH_TOKEN_TTL;
      else ctx.body.refresh_expires_in ??= 0;
      ctx.body.scope ??= DEFAULT_SCOPES.join(' ');
    } else if (route === 'jwks' && ctx.status === 200) {
      ctx.type = 'application/json';
    }
  });

  return provider;
}
