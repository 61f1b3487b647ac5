// In-memory storage adapter for oidc-provider (grants, refresh tokens, ...). Nothing survives a
// restart, which is what a dev issuer wants: tokens are verified by signature, not by lookup.
const store = new Map(); // key -> { payload, expiresAt }
const grantIndex = new Map(); // grantId -> Set of keys

function sweep(now) {
  for (const [key, entry] of store) {
    if (entry.expiresAt !== undefined && entry.expiresAt <= now) store.delete(key);
  }
}
let lastSweep = 0;

export default class MemoryAdapter {
  constructor(name) {
    this.name = name;
  }

  key(id) {
    return `${this.name}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const now = Date.now();
    if (now - lastSweep > 60_000) {
      lastSweep = now;
      sweep(now);
    }
    const key = this.key(id);
    store.set(key, { payload: structuredClone(payload), expiresAt: expiresIn ? now + expiresIn * 1000 : undefined });
    if (payload.grantId) {
      if (!grantIndex.has(payload.grantId)) grantIndex.set(payload.grantId, new Set());
      grantIndex.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      store.delete(this.key(id));
      return undefined;
    }
    return structuredClone(entry.payload);
  }

  async findByUid(uid) {
    for (const [key, entry] of store) {
      if (key.startsWith(`${this.name}:`) && entry.payload.uid === uid) return this.find(key.slice(this.name.length + 1));
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [key, entry] of store) {
      if (key.startsWith(`${this.name}:`) && entry.payload.userCode === userCode) return this.find(key.slice(this.name.length + 1));
    }
    return undefined;
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grantIndex.get(grantId) ?? []) store.delete(key);
    grantIndex.delete(grantId);
  }
}
