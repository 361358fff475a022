'use strict';
// Node.js cluster version of the prefork greeting server.
//
//   node cluster.js PORT WORKERS [rr|none]
//   (or env PORT, WORKERS, SCHED=rr|none; PORT 0 = any free port)
//
// rr   = cluster.SCHED_RR: the primary accepts every connection and hands the
//        socket to the workers round-robin over IPC.
// none = cluster.SCHED_NONE: the listening handle is shared with the workers,
//        which all accept() on it themselves (the kernel picks who gets it).
//
// Each worker answers "Hello from <pid>\n" and closes. The primary prints
// "ready <port>" on stdout once every worker is listening, forwards
// SIGINT/SIGTERM to the workers and exits when they are gone.
const cluster = require('node:cluster');
const net = require('node:net');

function arg(i, envName, fallback) {
  const v = process.argv[i] ?? process.env[envName];
  return v === undefined || v === '' ? fallback : v;
}

if (cluster.isPrimary) {
  const port = Number(arg(2, 'PORT', '0'));
  const workers = Number(arg(3, 'WORKERS', '5'));
  const sched = arg(4, 'SCHED', 'rr');
  if (!Number.isInteger(port) || port < 0 || port > 65535 ||
      !Number.isInteger(workers) || workers < 1 || !['rr', 'none'].includes(sched)) {
    console.error('usage: node cluster.js PORT WORKERS [rr|none]');
    process.exit(2);
  }
  // Must be set before the first fork.
  cluster.schedulingPolicy = sched === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR;
  cluster.setupPrimary({ args: [String(port)] });

  let listening = 0;
  let stopping = false;
  cluster.on('listening', (worker, address) => {
    listening += 1;
    if (listening === workers) {
      process.stdout.write(`ready ${address.port}\n`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`worker ${worker.process.pid} exited (code ${code}, signal ${signal})`);
    }
    if (Object.keys(cluster.workers).length === 0) {
      process.exit(0);
    }
  });
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      stopping = true;
      for (const w of Object.values(cluster.workers)) {
        w.process.kill(sig);
      }
    });
  }
  for (let i = 0; i < workers; i++) {
    cluster.fork();
  }
} else {
  const port = Number(process.argv[2]);
  const greeting = `Hello from ${process.pid}\n`;
  const server = net.createServer((socket) => {
    socket.on('error', () => {}); // client went away: nothing to do
    socket.end(greeting);
  });
  server.listen(port, '127.0.0.1', 1024);
}
