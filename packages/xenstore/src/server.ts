// A small xenstored for the lab and tests: the real wire protocol over unix sockets, one domain id per
// listening socket, xenstored's permission rules, watches and transactions. Bad input never crashes it:
// a malformed request gets an error reply; a stream it cannot resynchronise is closed.

import { chmodSync, existsSync, unlinkSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import {
  allowed,
  type Change,
  domainPath,
  formatPerms,
  isAncestorOrSelf,
  type Node,
  type Perm,
  parsePerms,
  pathsConflict,
  resolvePath,
  Transaction,
  Tree,
} from "./store.js";
import {
  encodeFrame,
  type Frame,
  FrameDecoder,
  isXenstoreError,
  nulTerminated,
  splitNul,
  TYPE_NAMES,
  XenstoreError,
  XS,
} from "./wire.js";

export type ServerLog = (event: string, fields?: Record<string, unknown>) => void;

interface Watch {
  /** As the client gave it (relative or absolute). */
  readonly given: string;
  /** Absolute, or the special "@…" name. */
  readonly abs: string;
  readonly token: string;
}

const MAX_WATCHES = 128;
const MAX_TRANSACTIONS = 10;
const OK = nulTerminated("OK");

class Connection {
  readonly watches: Watch[] = [];
  readonly transactions = new Map<number, Transaction>();
  private readonly decoder = new FrameDecoder();
  private closed = false;

  constructor(
    readonly server: XenstoreServer,
    readonly stream: Duplex,
    readonly domid: number,
  ) {
    stream.on("data", (chunk: Buffer) => this.receive(chunk));
    stream.on("error", () => this.close());
    stream.on("close", () => this.close());
  }

  private receive(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.server.log("protocol_error", { domid: this.domid, error: (err as Error).message });
      this.close();
      return;
    }
    for (const frame of frames) {
      if (this.closed) return;
      this.server.handle(this, frame);
    }
  }

  send(frame: Frame): void {
    if (this.closed) return;
    this.stream.write(encodeFrame(frame));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.forget(this);
    this.stream.destroy();
  }

  relative(abs: string): string {
    const prefix = `${domainPath(this.domid)}/`;
    return abs.startsWith(prefix) ? abs.slice(prefix.length) : abs;
  }
}

export interface ListenOptions {
  /** The domain every connection on this socket speaks as; 0 (Dom0, privileged) by default. */
  readonly domid?: number;
  /** File mode of the socket; 0o600 by default. */
  readonly mode?: number;
}

/**
 * What a restart carries to the next xenstored process (as xenstored's live update does): the tree, with each
 * node's value and permissions, and the guest sockets it served. Connections and watches are not carried:
 * clients reconnect and watch again.
 */
export interface XenstoreSnapshot {
  readonly version: 1;
  readonly tree: SnapshotNode;
  readonly guests: ReadonlyArray<{ readonly domid: number; readonly path: string }>;
}

export interface SnapshotNode {
  /** The value, base64. */
  readonly value: string;
  readonly perms: readonly Perm[];
  readonly children: Readonly<Record<string, SnapshotNode>>;
}

function snapshotOf(node: Node): SnapshotNode {
  return {
    value: node.value.toString("base64"),
    perms: node.perms.map((p) => ({ ...p })),
    children: Object.fromEntries([...node.children].map(([k, c]) => [k, snapshotOf(c)])),
  };
}

function nodeOf(s: SnapshotNode): Node {
  return {
    value: Buffer.from(s.value, "base64"),
    perms: s.perms.map((p) => ({ domid: p.domid, access: p.access })),
    children: new Map(Object.entries(s.children).map(([k, c]) => [k, nodeOf(c)])),
  };
}

export class XenstoreServer {
  private tree = new Tree();
  private generation = 0;
  private changeLog: Array<{ generation: number; path: string }> = [];
  private nextTx = 1;
  private readonly connections = new Set<Connection>();
  private readonly servers: Array<{ server: Server; path: string; domid: number }> = [];

  constructor(readonly log: ServerLog = () => {}) {
    for (const p of ["/local", "/local/domain", "/tool", "/vm"]) this.tree.mkdir(p, 0);
  }

  /** Serves the protocol on a unix socket as domain `domid`. */
  async listen(path: string, options: ListenOptions = {}): Promise<void> {
    const domid = options.domid ?? 0;
    if (existsSync(path)) unlinkSync(path);
    const server = createServer((sock: Socket) => this.attach(sock, domid));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
    chmodSync(path, options.mode ?? 0o600);
    this.servers.push({ server, path, domid });
    this.log("listening", { socket: path, domid });
  }

  /** Serves the protocol on any duplex stream (tests, in-process peers). */
  attach(stream: Duplex, domid: number): void {
    this.connections.add(new Connection(this, stream, domid));
  }

  /** Creates /local/domain/<domid> owned by that domain and fires @introduceDomain, as the toolstack would. */
  introduceDomain(domid: number): void {
    const path = domainPath(domid);
    this.commit(this.tree.mkdir(path, 0));
    this.commit(this.tree.setPerms(path, [{ domid, access: "n" }], 0));
    this.fireSpecial("@introduceDomain");
  }

  /** Removes a domain's subtree and fires @releaseDomain. */
  releaseDomain(domid: number): void {
    this.commit(this.tree.rm(domainPath(domid), 0));
    this.fireSpecial("@releaseDomain");
  }

  /** The tree and the guest sockets, for the next process to carry on with (restore). */
  snapshot(): XenstoreSnapshot {
    return {
      version: 1,
      tree: snapshotOf(this.tree.root),
      guests: this.servers.filter((s) => s.domid !== 0).map((s) => ({ domid: s.domid, path: s.path })),
    };
  }

  /** Takes over a snapshot's tree and serves its guest sockets again (before any client connects). */
  async restore(snapshot: XenstoreSnapshot): Promise<void> {
    if (snapshot.version !== 1)
      throw new Error(`unknown xenstored snapshot version ${String(snapshot.version)}`);
    this.tree = new Tree(nodeOf(snapshot.tree));
    for (const g of snapshot.guests) await this.listen(g.path, { domid: g.domid });
  }

  /** Reads a value directly (Dom0 view); undefined when absent. */
  peek(path: string): string | undefined {
    return this.tree.lookup(path)?.value.toString("utf8");
  }

  async close(): Promise<void> {
    for (const c of [...this.connections]) c.close();
    await Promise.all(
      this.servers.map(
        ({ server, path }) =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            if (existsSync(path)) unlinkSync(path);
          }),
      ),
    );
    this.servers.length = 0;
  }

  forget(conn: Connection): void {
    this.connections.delete(conn);
  }

  handle(conn: Connection, frame: Frame): void {
    const reply = (type: number, payload: Buffer) =>
      conn.send({ type, reqId: frame.reqId, txId: frame.txId, payload });
    const fail = (err: unknown) => {
      const code = isXenstoreError(err) ? err.code : "EIO";
      if (!isXenstoreError(err)) this.log("internal_error", { error: String(err) });
      reply(XS.ERROR, nulTerminated(code));
    };
    try {
      if (frame.type === XS.CONTROL) {
        this.control(conn, splitNul(frame.payload)).then((out) => reply(frame.type, out), fail);
        return;
      }
      reply(frame.type, this.dispatch(conn, frame));
    } catch (err) {
      fail(err);
    }
  }

  /**
   * XS_CONTROL, Dom0 only. The lab's toolstack uses it where Xen's uses XS_INTRODUCE/XS_RELEASE:
   * "introduce DOMID SOCKET" serves a guest socket as that domain; "release DOMID" closes the domain's
   * sockets and connections and removes its tree.
   */
  private async control(conn: Connection, args: string[]): Promise<Buffer> {
    if (conn.domid !== 0) throw new XenstoreError("EACCES", "CONTROL");
    const [cmd, id, socket] = args;
    const domid = Number(id);
    if (id === undefined || !/^\d{1,5}$/.test(id) || domid === 0)
      throw new XenstoreError("EINVAL", "CONTROL", cmd);
    if (cmd === "introduce" && socket?.startsWith("/")) {
      await this.listen(socket, { domid });
      if (!this.tree.lookup(domainPath(domid))) this.introduceDomain(domid);
      else this.fireSpecial("@introduceDomain");
      return OK;
    }
    if (cmd === "release" && socket === undefined) {
      await this.releaseSockets(domid);
      if (this.tree.lookup(domainPath(domid))) this.releaseDomain(domid);
      return OK;
    }
    throw new XenstoreError("EINVAL", "CONTROL", cmd);
  }

  private async releaseSockets(domid: number): Promise<void> {
    for (const c of [...this.connections]) if (c.domid === domid) c.close();
    const mine = this.servers.filter((s) => s.domid === domid);
    for (const s of mine) this.servers.splice(this.servers.indexOf(s), 1);
    await Promise.all(
      mine.map(
        ({ server, path }) =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            if (existsSync(path)) unlinkSync(path);
          }),
      ),
    );
  }

  private view(conn: Connection, txId: number, op: string): { tree: Tree; tx: Transaction | undefined } {
    if (txId === 0) return { tree: this.tree, tx: undefined };
    const tx = conn.transactions.get(txId);
    if (!tx) throw new XenstoreError("ENOENT", op, `transaction ${txId}`);
    return { tree: tx.tree, tx };
  }

  private dispatch(conn: Connection, frame: Frame): Buffer {
    const args = splitNul(frame.payload);
    const op = TYPE_NAMES[frame.type] ?? `type ${frame.type}`;
    const path = (i = 0) => {
      const p = args[i];
      if (p === undefined) throw new XenstoreError("EINVAL", op);
      return resolvePath(p, conn.domid, op);
    };
    switch (frame.type) {
      case XS.READ: {
        const { tree, tx } = this.view(conn, frame.txId, op);
        const p = path();
        tx?.touched.add(p);
        return tree.read(p, conn.domid, op).value;
      }
      case XS.DIRECTORY: {
        const { tree, tx } = this.view(conn, frame.txId, op);
        const p = path();
        tx?.touched.add(p);
        return nulTerminated(...[...tree.read(p, conn.domid, op).children.keys()].sort());
      }
      case XS.GET_PERMS: {
        const { tree, tx } = this.view(conn, frame.txId, op);
        const p = path();
        tx?.touched.add(p);
        return nulTerminated(...formatPerms(tree.read(p, conn.domid, op).perms));
      }
      case XS.WRITE: {
        const nul = frame.payload.indexOf(0);
        if (nul < 0) throw new XenstoreError("EINVAL", op);
        const p = resolvePath(frame.payload.subarray(0, nul).toString("utf8"), conn.domid, op);
        const value = Buffer.from(frame.payload.subarray(nul + 1));
        return this.mutate(conn, frame.txId, op, p, (tree) => tree.write(p, value, conn.domid), {
          kind: "write",
          path: p,
          value,
        });
      }
      case XS.MKDIR: {
        const p = path();
        return this.mutate(conn, frame.txId, op, p, (tree) => tree.mkdir(p, conn.domid), {
          kind: "mkdir",
          path: p,
        });
      }
      case XS.RM: {
        const p = path();
        return this.mutate(conn, frame.txId, op, p, (tree) => tree.rm(p, conn.domid), {
          kind: "rm",
          path: p,
        });
      }
      case XS.SET_PERMS: {
        const p = path();
        const perms = parsePerms(args.slice(1), op, p);
        return this.mutate(conn, frame.txId, op, p, (tree) => tree.setPerms(p, perms, conn.domid), {
          kind: "setPerms",
          path: p,
          perms,
        });
      }
      case XS.WATCH: {
        const [given, token] = args;
        if (given === undefined || token === undefined || args.length !== 2)
          throw new XenstoreError("EINVAL", op);
        const abs = given.startsWith("@") ? given : resolvePath(given, conn.domid, op);
        if (given.startsWith("@") && !["@introduceDomain", "@releaseDomain"].includes(given)) {
          throw new XenstoreError("EINVAL", op, given);
        }
        if (conn.watches.some((w) => w.given === given && w.token === token)) {
          throw new XenstoreError("EEXIST", op, given);
        }
        if (conn.watches.length >= MAX_WATCHES) throw new XenstoreError("E2BIG", op, given);
        const watch = { given, abs, token };
        conn.watches.push(watch);
        // Every watch fires once on registration; the client sees it after the WATCH reply.
        queueMicrotask(() =>
          conn.send({ type: XS.WATCH_EVENT, reqId: 0, txId: 0, payload: nulTerminated(given, token) }),
        );
        return OK;
      }
      case XS.UNWATCH: {
        const [given, token] = args;
        const i = conn.watches.findIndex((w) => w.given === given && w.token === token);
        if (i < 0) throw new XenstoreError("ENOENT", op, given);
        conn.watches.splice(i, 1);
        return OK;
      }
      case XS.RESET_WATCHES: {
        conn.watches.length = 0;
        return OK;
      }
      case XS.TRANSACTION_START: {
        if (frame.txId !== 0) throw new XenstoreError("EBUSY", op);
        if (conn.transactions.size >= MAX_TRANSACTIONS) throw new XenstoreError("ENOSPC", op);
        const tx = new Transaction(this.nextTx++, this.tree.clone(), this.generation);
        conn.transactions.set(tx.id, tx);
        return nulTerminated(String(tx.id));
      }
      case XS.TRANSACTION_END: {
        const commit = args[0];
        if (commit !== "T" && commit !== "F") throw new XenstoreError("EINVAL", op);
        const tx = conn.transactions.get(frame.txId);
        if (!tx) throw new XenstoreError("ENOENT", op, `transaction ${frame.txId}`);
        conn.transactions.delete(tx.id);
        if (commit === "T") this.commitTransaction(tx, conn.domid);
        return OK;
      }
      case XS.GET_DOMAIN_PATH: {
        const id = args[0];
        if (id === undefined || !/^\d{1,5}$/.test(id)) throw new XenstoreError("EINVAL", op);
        return nulTerminated(domainPath(Number(id)));
      }
      case XS.IS_DOMAIN_INTRODUCED: {
        const id = args[0];
        if (id === undefined || !/^\d{1,5}$/.test(id)) throw new XenstoreError("EINVAL", op);
        return nulTerminated(this.tree.lookup(domainPath(Number(id))) ? "T" : "F");
      }
      default:
        throw new XenstoreError(
          frame.type === XS.ERROR || frame.type === XS.WATCH_EVENT ? "EINVAL" : "ENOSYS",
          op,
        );
    }
  }

  private mutate(
    conn: Connection,
    txId: number,
    op: string,
    path: string,
    apply: (tree: Tree) => Change[],
    record: Transaction["ops"][number],
  ): Buffer {
    const { tree, tx } = this.view(conn, txId, op);
    const changes = apply(tree);
    if (tx) {
      tx.touched.add(path);
      tx.ops.push(record);
    } else {
      this.commit(changes);
    }
    return OK;
  }

  private commitTransaction(tx: Transaction, domid: number): void {
    const conflict = this.changeLog.some(
      (c) => c.generation > tx.startGeneration && [...tx.touched].some((t) => pathsConflict(t, c.path)),
    );
    if (conflict) throw new XenstoreError("EAGAIN", "TRANSACTION_END");
    // Nothing the transaction saw has changed: replaying its mutations on the live tree gives its result.
    const changes: Change[] = [];
    for (const o of tx.ops) {
      if (o.kind === "write") changes.push(...this.tree.write(o.path, o.value ?? Buffer.alloc(0), domid));
      else if (o.kind === "mkdir") changes.push(...this.tree.mkdir(o.path, domid));
      else if (o.kind === "rm") changes.push(...this.tree.rm(o.path, domid));
      else changes.push(...this.tree.setPerms(o.path, o.perms ?? [], domid));
    }
    this.commit(changes);
  }

  private commit(changes: readonly Change[]): void {
    if (changes.length === 0) return;
    this.generation++;
    for (const c of changes) this.changeLog.push({ generation: this.generation, path: c.path });
    // Keep the log only as far back as the oldest open transaction needs.
    const oldest = Math.min(
      this.generation,
      ...[...this.connections].flatMap((c) => [...c.transactions.values()].map((t) => t.startGeneration)),
    );
    this.changeLog = this.changeLog.filter((e) => e.generation > oldest);
    for (const change of changes) this.fire(change);
  }

  private fire(change: Change): void {
    for (const conn of this.connections) {
      if (!allowed(change.perms, conn.domid, "r")) continue;
      for (const w of conn.watches) {
        if (w.abs.startsWith("@")) continue;
        const hit =
          isAncestorOrSelf(w.abs, change.path) || (change.removed && isAncestorOrSelf(change.path, w.abs));
        if (!hit) continue;
        const reported = w.given.startsWith("/") ? change.path : conn.relative(change.path);
        conn.send({ type: XS.WATCH_EVENT, reqId: 0, txId: 0, payload: nulTerminated(reported, w.token) });
      }
    }
  }

  private fireSpecial(name: string): void {
    for (const conn of this.connections) {
      for (const w of conn.watches) {
        if (w.abs === name) {
          conn.send({ type: XS.WATCH_EVENT, reqId: 0, txId: 0, payload: nulTerminated(name, w.token) });
        }
      }
    }
  }

  /** A JSON-able copy of a subtree (values, perms), e.g. to move a domain's entries to another host. */
  exportTree(path: string): ExportedNode | undefined {
    const node = this.tree.lookup(path);
    return node ? exportNode(node) : undefined;
  }

  /** Replaces a subtree with an exported one (Dom0 authority), firing watches on what changed. */
  importTree(path: string, data: ExportedNode): void {
    const changes: Change[] = [];
    if (this.tree.lookup(path)) changes.push(...this.tree.rm(path, 0));
    const walk = (p: string, n: ExportedNode) => {
      changes.push(...this.tree.write(p, Buffer.from(n.value, "utf8"), 0));
      changes.push(
        ...this.tree.setPerms(
          p,
          n.perms.map((x) => ({ ...x })),
          0,
        ),
      );
      for (const [name, child] of Object.entries(n.children)) walk(`${p}/${name}`, child);
    };
    walk(path, data);
    this.commit(changes);
  }
}

export interface ExportedNode {
  readonly value: string;
  readonly perms: Perm[];
  readonly children: Record<string, ExportedNode>;
}

function exportNode(node: Node): ExportedNode {
  return {
    value: node.value.toString("utf8"),
    perms: node.perms.map((p) => ({ ...p })),
    children: Object.fromEntries([...node.children].map(([k, v]) => [k, exportNode(v)])),
  };
}
