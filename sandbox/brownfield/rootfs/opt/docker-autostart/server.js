// Stand-in for the runbook's hand-made autostart proxy (/opt/docker-autostart/server.js): on a
// request for a configured Host it starts the service's compose project if its port is closed,
// waits for the port (MAX_WAIT_TIME), then proxies. Reads config.json once at start.
const http = require('http');
const net = require('net');
const { execFile } = require('child_process');
const fs = require('fs');

const CONFIG = JSON.parse(fs.readFileSync('/opt/docker-autostart/config.json', 'utf8'));
const MAX_WAIT_TIME = 30000; // 30s
const PORT = 8890;

function portOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

function composeUp(dir) {
  return new Promise((resolve) => {
    execFile('docker', ['compose', 'up', '-d'], { cwd: dir }, (err) => resolve(!err));
  });
}

async function ensure(svc) {
  if (await portOpen(svc.proxyPort)) return true;
  console.log(`[autostart] starting ${svc.name} in ${svc.composeDir}`);
  await composeUp(svc.composeDir);
  const until = Date.now() + MAX_WAIT_TIME;
  while (Date.now() < until) {
    if (await portOpen(svc.proxyPort)) { await new Promise((r) => setTimeout(r, 1000)); return true; }
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
}

http.createServer(async (req, res) => {
  const host = (req.headers.host || '').split(':')[0];
  const svc = CONFIG.services[host];
  if (!svc) { res.writeHead(404); res.end('unknown service\n'); return; }
  if (!(await ensure(svc))) { res.writeHead(502); res.end('service did not start\n'); return; }
  const up = http.request({ host: '127.0.0.1', port: svc.proxyPort, path: req.url, method: req.method,
                            headers: req.headers }, (r) => { res.writeHead(r.statusCode, r.headers); r.pipe(res); });
  up.on('error', () => { res.writeHead(502); res.end('upstream error\n'); });
  req.pipe(up);
}).listen(PORT, '127.0.0.1', () => console.log(`[autostart] listening on 127.0.0.1:${PORT}`));
