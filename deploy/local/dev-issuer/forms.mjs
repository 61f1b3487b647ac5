// Reading an HTML form's body, bounded: the token endpoint, the admin calls and the portal's login
// page all take `application/x-www-form-urlencoded` and nothing else.

export async function readForm(req, limit = 64 * 1024) {
  const type = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw Object.assign(new Error('request body too large'), { status: 413 });
    chunks.push(chunk);
  }
  if (size === 0) return new URLSearchParams();
  if (type !== 'application/x-www-form-urlencoded') {
    throw Object.assign(new Error('only application/x-www-form-urlencoded is supported'), { status: 400 });
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}
