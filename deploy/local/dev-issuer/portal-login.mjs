// The web portal's side of the dev issuer: the public client `bildungsraum-portal` (authorization
// code flow with PKCE, as Keycloak's standard flow), a German, accessible login page at Keycloak's
// `login-actions` path, and German sign-out pages. Kept apart from the rest of the issuer.
import { API_RESOURCE } from './config.mjs';
import { readForm } from './forms.mjs';

export const PORTAL_CLIENT_ID = 'bildungsraum-portal';
const PORTAL_SCOPE = 'openid profile email';

/** Portal base URLs the client may return to: DEV_ISSUER_PORTAL_URLS, comma-separated. */
function portalUrls(env = process.env) {
  return (env.DEV_ISSUER_PORTAL_URLS || 'http://127.0.0.1:8000')
    .split(',').map((u) => u.trim().replace(/\/+$/, '')).filter(Boolean);
}

export function portalClient(env = process.env) {
  const urls = portalUrls(env);
  return {
    client_id: PORTAL_CLIENT_ID,
    client_name: 'Bildungsraum',
    token_endpoint_auth_method: 'none', // public client: PKCE instead of a secret
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: urls.map((u) => `${u}/auth/callback`),
    post_logout_redirect_uris: urls.map((u) => `${u}/abgemeldet`),
  };
}

const escapeHtml = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

// One self-contained page: no external assets, no script; contrast ≥ 4.5:1.
function page(title, body) {
  return `<!DOCTYPE html>
<html lang="de"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} – Bildungsraum</title>
<style>
body{font-family:"Fira Sans",system-ui,sans-serif;margin:0;color:#171a2b;background:#f4f6fb}
main{max-width:28rem;margin:3rem auto;padding:2rem;background:#fff;border-top:4px solid #1c3a7a}
h1{font-size:1.6rem;margin-top:0}label{display:block;font-weight:600;margin:1rem 0 .25rem}
input{font:inherit;width:100%;box-sizing:border-box;padding:.6rem;border:2px solid #3d4155;border-radius:4px}
input:focus,button:focus{outline:3px solid #c2410c;outline-offset:2px}
button{font:inherit;font-weight:600;margin-top:1.5rem;padding:.7rem 1.2rem;border:0;border-radius:4px;background:#1c3a7a;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#1c3a7a;border:2px solid #1c3a7a;margin-left:.5rem}
.error{border-left:5px solid #b3261e;padding:.5rem 1rem;background:#fdecea;color:#5c0f0a}
.error a{color:#5c0f0a}
</style></head><body><main>${body}</main></body></html>`;
}

function loginPage(realmPath, uid, { username = '', failed = false } = {}) {
  const error = failed ? `<div class="error" role="alert" tabindex="-1" id="fehler"><h2>Es gibt ein Problem</h2>
<p><a href="#username">Benutzername oder Passwort ist falsch. Prüfen Sie beides und versuchen Sie es noch einmal.</a></p></div>` : '';
  return page(failed ? 'Fehler: Anmelden' : 'Anmelden', `<h1>Bei Bildungsraum anmelden</h1>${error}
<form method="post" action="${realmPath}/login-actions/${escapeHtml(uid)}/login" novalidate>
<label for="username">Benutzername</label>
<input id="username" name="username" autocomplete="username" value="${escapeHtml(username)}" required${failed ? ' aria-invalid="true" aria-describedby="fehler"' : ''}>
<label for="password">Passwort</label>
<input id="password" name="password" type="password" autocomplete="current-password" required${failed ? ' aria-invalid="true"' : ''}>
<button type="submit">Anmelden</button>
</form>`);
}

/** oidc-provider options the portal client needs; merged into the provider's configuration. */
export function portalProviderOptions(realmPath) {
  return {
    interactions: { url: (_ctx, interaction) => `${realmPath}/login-actions/${interaction.uid}` },
    // First-party client: no consent screen, as Keycloak with "Consent required" off.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      if (ctx.oidc.client.clientId !== PORTAL_CLIENT_ID || !ctx.oidc.session.accountId) return undefined;
      const grant = new ctx.oidc.provider.Grant({ clientId: PORTAL_CLIENT_ID, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope(PORTAL_SCOPE);
      grant.addResourceScope(API_RESOURCE, PORTAL_SCOPE);
      await grant.save();
      return grant;
    },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = page('Abmelden', `<h1>Abmelden</h1><p>Möchten Sie sich bei Bildungsraum abmelden?</p>${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Ja, abmelden</button>
<button class="secondary" type="submit" form="op.logoutForm">Nein, angemeldet bleiben</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Abgemeldet', '<h1>Sie sind abgemeldet</h1><p>Sie können dieses Fenster schließen.</p>');
      },
    },
  };
}

function sendHtml(res, status, html) {
  const data = Buffer.from(html);
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8', 'Content-Length': data.length, 'Cache-Control': 'no-store',
    'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    'X-Frame-Options': 'DENY',
  });
  res.end(data);
}

/** Handles the login-actions routes; answers true when the request was one of them. */
export function portalLoginRoutes(provider, directory, realmPath) {
  const prefix = `${realmPath}/login-actions/`;
  return async function handle(req, res, path) {
    if (!path.startsWith(prefix)) return false;
    const [uid, action] = path.slice(prefix.length).split('/');
    let details;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      sendHtml(res, 400, page('Anmeldung abgelaufen', '<h1>Anmeldung abgelaufen</h1><p>Diese Anmeldeseite ist nicht mehr gültig. Gehen Sie zurück zum Portal und melden Sie sich noch einmal an.</p>'));
      return true;
    }
    if (details.uid !== uid) {
      sendHtml(res, 400, page('Anmeldung abgelaufen', '<h1>Anmeldung abgelaufen</h1><p>Gehen Sie zurück zum Portal und melden Sie sich noch einmal an.</p>'));
      return true;
    }
    if (req.method === 'GET' && !action) {
      if (details.prompt.name !== 'login' && details.session?.accountId) {
        await provider.interactionFinished(req, res, { login: { accountId: details.session.accountId } });
        return true;
      }
      sendHtml(res, 200, loginPage(realmPath, uid));
      return true;
    }
    if (req.method === 'POST' && action === 'login') {
      const form = await readForm(req, 16 * 1024);
      const user = directory.authenticate(form.get('username'), form.get('password'));
      if (!user) {
        sendHtml(res, 401, loginPage(realmPath, uid, { username: form.get('username') || '', failed: true }));
        return true;
      }
      await provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
      return true;
    }
    sendHtml(res, 404, page('Nicht gefunden', '<h1>Nicht gefunden</h1>'));
    return true;
  };
}
