// interop.js — node-resque's side of kiln's Resque interoperability tests
// (resque/interop_node_test.go runs it). Usage:
//
//   node interop.js MODE CONFIG_JSON
//
// CONFIG_JSON: {"host","port","db","namespace" (node-resque's, no
// trailing colon), "queues": [...], "count": N, "jobs": [[queue, class, args,
// delay ms or null], ...]}; the Redis password, if any, is in the environment
// variable KILN_INTEROP_REDIS_PASSWORD. Every mode prints one JSON line on stdout with
// what it saw, and exits 0; anything unexpected exits 1 with a message.
//
// Modes:
//   enqueue   queue.enqueue (delay null) or queue.enqueueAt(now + delay) of every job
//   work      a worker on queues runs "Echo" jobs until count of them ran;
//             prints {"ran": [{"queue", "args"}...], "failed": [...]}
//   schedule  node-resque's scheduler and a worker run together until count
//             Echo jobs ran; prints the same as work
//   failed    prints {"failed": queue.failed(0, -1)}
//   remove-failed  removes every failed record with queue.removeFailed;
//             prints {"removed": [counts...], "left": failedCount}
//   retry-failed   queue.retryAndRemoveFailed of every failed record;
//             prints {"retried": n, "left": failedCount}
"use strict";

const { Queue, Worker, Scheduler } = require("node-resque");

const mode = process.argv[2];
const cfg = JSON.parse(process.argv[3] || "{}");
const connection = {
  host: cfg.host,
  port: cfg.port,
  database: cfg.db || 0,
  namespace: cfg.namespace,
};
if (process.env.KILN_INTEROP_REDIS_PASSWORD) {
  connection.password = process.env.KILN_INTEROP_REDIS_PASSWORD;
}

const deadline = setTimeout(() => {
  console.error(`interop.js ${mode}: no result within 60 s`);
  process.exit(1);
}, 60000);

function done(result) {
  clearTimeout(deadline);
  process.stdout.write(JSON.stringify(result) + "\n");
}

async function withQueue(f) {
  const queue = new Queue({ connection });
  queue.on("error", (e) => {
    console.error("queue error:", e);
    process.exit(1);
  });
  await queue.connect();
  try {
    return await f(queue);
  } finally {
    await queue.end();
  }
}

// runWorker runs a worker (and a scheduler if withScheduler) until count
// Echo jobs ran.
async function runWorker(withScheduler) {
  const ran = [];
  const failed = [];
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const jobs = {
    Echo: {
      perform: async (...args) => {
        ran.push({ queue: worker.queue, args });
        if (ran.length >= cfg.count) finish();
        return true;
      },
    },
  };
  const worker = new Worker({ connection, queues: cfg.queues, timeout: 20 }, jobs);
  worker.on("failure", (queue, job, err) => {
    failed.push({ queue, job, error: String(err) });
  });
  worker.on("error", (err, queue, job) => {
    console.error("worker error:", err, queue, job);
    process.exit(1);
  });
  await worker.connect();
  let scheduler;
  if (withScheduler) {
    scheduler = new Scheduler({ connection, timeout: 20, name: `interop-${process.pid}` });
    scheduler.on("error", (err) => {
      console.error("scheduler error:", err);
      process.exit(1);
    });
    await scheduler.connect();
    scheduler.start();
  }
  worker.start();
  if (cfg.count > 0) await finished;
  await worker.end();
  if (scheduler) await scheduler.end();
  done({ ran, failed });
}

async function main() {
  switch (mode) {
    case "enqueue":
      await withQueue(async (queue) => {
        for (const [q, cls, args, delay] of cfg.jobs) {
          if (delay === null || delay === undefined) {
            await queue.enqueue(q, cls, args);
          } else {
            await queue.enqueueAt(Date.now() + delay, q, cls, args);
          }
        }
      });
      done({ enqueued: cfg.jobs.length });
      break;
    case "work":
      await runWorker(false);
      break;
    case "schedule":
      await runWorker(true);
      break;
    case "failed":
      await withQueue(async (queue) => done({ failed: await queue.failed(0, -1) }));
      break;
    case "remove-failed":
      await withQueue(async (queue) => {
        const removed = [];
        for (const f of await queue.failed(0, -1)) removed.push(await queue.removeFailed(f));
        done({ removed, left: await queue.failedCount() });
      });
      break;
    case "retry-failed":
      await withQueue(async (queue) => {
        let retried = 0;
        for (const f of await queue.failed(0, -1)) {
          await queue.retryAndRemoveFailed(f);
          retried++;
        }
        done({ retried, left: await queue.failedCount() });
      });
      break;
    default:
      console.error(`interop.js: unknown mode ${mode}`);
      process.exit(2);
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`interop.js ${mode}:`, e);
    process.exit(1);
  },
);
