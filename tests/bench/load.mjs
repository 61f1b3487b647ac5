// The load generator of `make bench-portal`: N clients, each on its own keep-alive connection, ask
// the given URLs in turn and time each answer from the first byte sent to the last byte read.
// Node's event loop costs a client about a tenth of a millisecond a request, so the figures are the
// servers' and not the clients'; sixteen Python threads under one interpreter lock were not (they
// added 15–70 ms to a page and counted it as the portal's).
//
// Reads {"urls": [...], "concurrency": n, "rounds": n, "headers": {...} (optional, sent with every
// request)} on stdin; writes one JSON line per request:
// {"url", "status", "ms", "timing": the Server-Timing header or "", "unavailable": bool}.
import http from "node:http";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const { urls, concurrency, rounds, headers = {} } = JSON.parse(Buffer.concat(chunks).toString("utf8"));

function get(agent, url) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const request = http.get(url, { agent, headers }, (response) => {
      const body = [];
      response.on("data", (chunk) => body.push(chunk));
      response.on("end", () => {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        const text = Buffer.concat(body).toString("utf8");
        resolve({
          url, status: response.statusCode, ms,
          timing: response.headers["server-timing"] || "",
          // a search page that could not reach the catalog still answers 200: not a sample
          unavailable: text.includes("vorübergehend nicht verfügbar"),
        });
      });
      response.on("error", reject);
    });
    request.setTimeout(30000, () => request.destroy(new Error("timeout")));
    request.on("error", reject);
  });
}

async function client(offset) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const lines = [];
  for (let i = 0; i < rounds; i++) {
    const url = urls[(offset + i) % urls.length];
    try {
      lines.push(JSON.stringify(await get(agent, url)));
    } catch (error) {
      lines.push(JSON.stringify({ url, status: 0, ms: 0, timing: "", unavailable: true, error: String(error) }));
    }
  }
  agent.destroy();
  return lines;
}

const all = await Promise.all(Array.from({ length: concurrency }, (_, n) => client(n)));
process.stdout.write(all.flat().join("\n") + "\n");
// the clients' own CPU, start-up included: what they took from the core they share with the portal
const { user, system } = process.cpuUsage();
process.stderr.write(JSON.stringify({ cpu_ms: (user + system) / 1000, requests: concurrency * rounds }) + "\n");
