// Starts the Firestore emulator of @firestore-emulator/server on 127.0.0.1 and fills the gaps
// that dbt-remote's GCP store depends on (docs/testing.md, "Emulator gaps filled"):
//
// 1. Commit preconditions on `update_time` (the compare-and-set of job records and of the log
//    head): the emulator checks only `exists` and silently ignores `update_time`. Here every
//    precondition of a commit is checked first, before any write is applied, so a commit is
//    all-or-nothing as in Firestore (the emulator applies writes one by one and would keep the
//    writes before a failed one). Failures get Firestore's codes: FAILED_PRECONDITION (stale
//    update_time), ALREADY_EXISTS (exists: false), NOT_FOUND (exists: true).
// 2. Distinct update times: the emulator stamps writes with millisecond clock time, so two
//    commits in the same millisecond would give a document the same update_time twice and an
//    update_time precondition could not tell the versions apart. Commits here wait for the
//    next millisecond when needed.
// 3. It binds 127.0.0.1 only (the emulator's own start() binds 0.0.0.0).
// 4. Cancelled Listen streams end: the emulator stops a Listen only when the client half-closes
//    it ("end"), not when the client cancels it (a dropped stream), so a cancelled stream kept
//    its handlers for ever. Here a cancelled or closed call ends too, and the launcher prints
//    `listens N` on stdout whenever the number of open Listen calls changes (tests read it).
//    A line `drop listens` on stdin ends every open Listen call with UNAVAILABLE, as Firestore
//    may end a stream at any time (tests of reconnecting).
//
// Usage: node start.js [PORT]   (0 or none: a free port). Prints `listening on 127.0.0.1:PORT`
// on stdout once it accepts connections; stops on SIGTERM/SIGINT or when stdin closes.
"use strict";

const grpc = require("@grpc/grpc-js");
const { FirestoreServer } = require("@firestore-emulator/server");

const COMMIT = "/google.firestore.v1.Firestore/Commit";
const LISTEN = "/google.firestore.v1.Firestore/Listen";

const emulator = new FirestoreServer();
// grpc-js keeps the registered handlers in `handlers` (its version is pinned by package-lock.json).
const handler = emulator.server.handlers.get(COMMIT);
if (!handler) {
  console.error("firestore-emulator: no Commit handler registered; the grpc-js layout changed");
  process.exit(1);
}
const commit = handler.func;
let lastCommitMs = 0;

function millis(timestamp) {
  return Number(timestamp.seconds) * 1000 + Math.floor(Number(timestamp.nanos) / 1e6);
}

// The first precondition of `writes` that does not hold, as a gRPC error; null if all hold.
function failedPrecondition(writes) {
  for (const write of writes) {
    if (!write.has_current_document) continue;
    const path = write.has_update ? write.update.name : write.delete;
    const doc = emulator.state.getDocument(path);
    const exists = doc.metadata.hasExist;
    const pre = write.current_document;
    if (pre.has_exists && pre.exists && !exists) {
      return { code: grpc.status.NOT_FOUND, details: `no entity to update: ${path}` };
    }
    if (pre.has_exists && !pre.exists && exists) {
      return { code: grpc.status.ALREADY_EXISTS, details: `entity already exists: ${path}` };
    }
    if (pre.has_update_time) {
      if (!exists) {
        return { code: grpc.status.NOT_FOUND, details: `no entity to update: ${path}` };
      }
      if (doc.metadata.updatedAt.getTime() !== millis(pre.update_time)) {
        return {
          code: grpc.status.FAILED_PRECONDITION,
          details: `the stored version of ${path} does not match the required update time`,
        };
      }
    }
  }
  return null;
}

handler.func = (call, callback) => {
  const error = failedPrecondition(call.request.writes);
  if (error) {
    callback(error, null);
    return;
  }
  while (Date.now() <= lastCommitMs) {
    // Wait for the next millisecond: each commit gets its own update time.
  }
  // The emulator's Commit runs synchronously (it calls back before returning), so no other
  // request can come between the checks above and its writes.
  commit(call, callback);
  lastCommitMs = Date.now();
};

const listenHandler = emulator.server.handlers.get(LISTEN);
if (!listenHandler) {
  console.error("firestore-emulator: no Listen handler registered; the grpc-js layout changed");
  process.exit(1);
}
const listen = listenHandler.func;
// Each Listen call adds three listeners to the emulator's emitter: more than Node's default
// warning threshold (10) is expected here.
emulator.state.emitter.setMaxListeners(0);
const openListens = new Map(); // call -> close(event)
listenHandler.func = (call) => {
  let open = true;
  const close = (event) => {
    if (!open) return;
    open = false;
    openListens.delete(call);
    console.log(`listens ${openListens.size}`);
    // The emulator's own handlers are registered with call.once("end"): run them.
    if (event !== "end") call.emit("end");
  };
  openListens.set(call, close);
  console.log(`listens ${openListens.size}`);
  call.once("end", () => close("end"));
  call.once("cancelled", () => close("cancelled"));
  call.once("close", () => close("close"));
  listen(call);
};

const port = Number(process.argv[2] ?? 0);
emulator.server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
  if (err) {
    console.error(`firestore-emulator: cannot bind 127.0.0.1:${port}: ${err.message}`);
    process.exit(1);
  }
  console.log(`listening on 127.0.0.1:${bound}`);
});

const stop = () => {
  emulator.server.forceShutdown();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("end", stop);
let input = "";
process.stdin.on("data", (chunk) => {
  input += chunk;
  let newline;
  while ((newline = input.indexOf("\n")) >= 0) {
    const line = input.slice(0, newline).trim();
    input = input.slice(newline + 1);
    if (line === "drop listens") {
      for (const [call, close] of [...openListens]) {
        close("dropped");
        call.emit("error", { code: grpc.status.UNAVAILABLE, details: "the test dropped the stream" });
      }
    }
  }
});
process.stdin.resume();
