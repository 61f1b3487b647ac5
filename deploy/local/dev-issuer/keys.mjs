// The realm's signing key: a private RS256 JWKS on disk, created on first start.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ConfigError } from './config.mjs';

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi'];

// RFC 7638 JWK thumbprint of an RSA key.
function thumbprint(jwk) {
  const canonical = JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n });
  return crypto.createHash('sha256').update(canonical).digest('base64url');
}

function generate() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    keys: [{
      kty: 'RSA', kid: thumbprint(jwk), use: 'sig', alg: 'RS256', ...jwk,
    }],
  };
}

function validate(jwks, file) {
  const key = jwks?.keys?.[0];
  if (!key || key.kty !== 'RSA' || !PRIVATE_MEMBERS.every((m) => typeof key[m] === 'string')
      || typeof key.n !== 'string' || typeof key.e !== 'string') {
    throw new ConfigError(`${file}: expected {"keys":[<private RSA JWK>]}`);
  }
  if (key.alg !== undefined && key.alg !== 'RS256') throw new ConfigError(`${file}: key alg must be RS256`);
  if (key.use !== undefined && key.use !== 'sig') throw new ConfigError(`${file}: key use must be sig`);
  try {
    crypto.createPrivateKey({ key, format: 'jwk' });
  } catch (err) {
    throw new ConfigError(`${file}: unusable RSA key (${err.message})`);
  }
  return {
    keys: jwks.keys.map((k) => ({
      ...k, kid: k.kid || thumbprint(k), alg: k.alg || 'RS256', use: k.use || 'sig',
    })),
  };
}

/** Load the private JWKS from `file`, generating and writing it (0600) when absent. */
export function loadOrCreateKeys(file) {
  let raw;
  try {
    raw = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err.code !== 'ENOENT') throw new ConfigError(`cannot read ${file}: ${err.message}`);
  }
  if (raw !== undefined) {
    let parsed;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      throw new ConfigError(`${file}: not JSON (${err.message})`);
    }
    return { jwks: validate(parsed, file), created: false };
  }

  const jwks = generate();
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  fs.chmodSync(tmp, 0o600);
  try {
    // link() fails if another process created the file meanwhile: then use theirs.
    fs.linkSync(tmp, file);
  } catch (err) {
    if (err.code !== 'EEXIST') throw err;
    fs.unlinkSync(tmp);
    return loadOrCreateKeys(file);
  }
  fs.unlinkSync(tmp);
  return { jwks, created: true };
}

/** Public members only, as served at the certs endpoint. */
export function publicJwk(jwk) {
  const { kty, kid, use, alg, n, e } = jwk;
  return { kid, kty, alg, use, n, e };
}
