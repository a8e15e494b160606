// The xenstore tree and its rules, as xenstored applies them: paths, per-node permissions, domain ownership,
// quotas, transactions with conflict detection, and which watches a change fires. No I/O here.

import { ABS_PATH_MAX, REL_PATH_MAX, XenstoreError } from "./wire.js";

export type Access = "n" | "r" | "w" | "b";
export interface Perm {
  readonly domid: number;
  readonly access: Access;
}

export interface Node {
  value: Buffer;
  perms: Perm[];
  children: Map<string, Node>;
}

/** A change to one node: what fires watches and what transactions conflict on. */
export interface Change {
  readonly path: string;
  /** The node was removed (with its subtree); watches below it fire too. */
  readonly removed: boolean;
  /** Permissions of the node at the time of the change (who may see the event). */
  readonly perms: readonly Perm[];
}

const SEGMENT = /^[A-Za-z0-9\-/_@]+$/;
export const NODE_QUOTA_PER_DOMAIN = 1000;

export function domainPath(domid: number): string {
  return `/local/domain/${domid}`;
}

/** Resolves a request path to an absolute one, validating it as xenstored does. */
export function resolvePath(path: string, domid: number, operation: string): string {
  if (path.startsWith("@")) throw new XenstoreError("EINVAL", operation, path);
  const relative = !path.startsWith("/");
  if (relative && path.length > REL_PATH_MAX) throw new XenstoreError("EINVAL", operation, path.slice(0, 64));
  const abs = relative ? `${domainPath(domid)}/${path}` : path;
  if (abs.length > ABS_PATH_MAX) throw new XenstoreError("EINVAL", operation, abs.slice(0, 64));
  if (abs === "/") return abs;
  if (abs.endsWith("/") || abs.includes("//") || !SEGMENT.test(abs)) {
    throw new XenstoreError("EINVAL", operation, abs);
  }
  return abs;
}

export function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/** True when `ancestor` is `path` or one of its ancestors. */
export function isAncestorOrSelf(ancestor: string, path: string): boolean {
  if (ancestor === "/" || ancestor === path) return true;
  return path.startsWith(`${ancestor}/`);
}

export function formatPerms(perms: readonly Perm[]): string[] {
  return perms.map((p) => `${p.access}${p.domid}`);
}

export function parsePerms(texts: readonly string[], operation: string, path: string): Perm[] {
  if (texts.length === 0) throw new XenstoreError("EINVAL", operation, path);
  return texts.map((t) => {
    const m = /^([nrwb])(\d{1,5})$/.exec(t);
    if (!m) throw new XenstoreError("EINVAL", operation, path);
    return { access: m[1] as Access, domid: Number(m[2]) };
  });
}

/** Whether `domid` may read ("r") or write ("w") a node with these permissions. Dom0 may do anything. */
export function allowed(perms: readonly Perm[], domid: number, want: "r" | "w"): boolean {
  if (domid === 0) return true;
  const [owner, ...rest] = perms;
  if (!owner) return false;
  if (owner.domid === domid) return true;
  const access = rest.find((p) => p.domid === domid)?.access ?? owner.access;
  return access === "b" || access === want;
}

function cloneTree(node: Node): Node {
  return {
    value: node.value,
    perms: node.perms.map((p) => ({ ...p })),
    children: new Map([...node.children].map(([k, v]) => [k, cloneTree(v)])),
  };
}

function countOwned(node: Node, domid: number): number {
  let n = node.perms[0]?.domid === domid ? 1 : 0;
  for (const c of node.children.values()) n += countOwned(c, domid);
  return n;
}

/** One view of the tree: the live store, or a transaction's private copy. Mutations report Changes. */
export class Tree {
  constructor(
    public root: Node = { value: Buffer.alloc(0), perms: [{ domid: 0, access: "n" }], children: new Map() },
  ) {}

  clone(): Tree {
    return new Tree(cloneTree(this.root));
  }

  lookup(path: string): Node | undefined {
    if (path === "/") return this.root;
    let node: Node | undefined = this.root;
    for (const seg of path.slice(1).split("/")) {
      node = node.children.get(seg);
      if (!node) return undefined;
    }
    return node;
  }

  read(path: string, domid: number, op = "READ"): Node {
    const node = this.lookup(path);
    if (!node) throw new XenstoreError("ENOENT", op, path);
    if (!allowed(node.perms, domid, "r")) throw new XenstoreError("EACCES", op, path);
    return node;
  }

  /** Creates missing nodes down to `path` (as xenstored: owned by the creating domain) and returns it. */
  private ensure(path: string, domid: number, op: string, changes: Change[]): Node {
    const existing = this.lookup(path);
    if (existing) {
      if (!allowed(existing.perms, domid, "w")) throw new XenstoreError("EACCES", op, path);
      return existing;
    }
    const segs = path.slice(1).split("/");
    let node = this.root;
    let at = "";
    const created: string[] = [];
    for (const seg of segs) {
      at = `${at}/${seg}`;
      const next = node.children.get(seg);
      if (next) {
        node = next;
        continue;
      }
      if (created.length === 0 && !allowed(node.perms, domid, "w"))
        throw new XenstoreError("EACCES", op, path);
      const perms = node.perms.map((p) => ({ ...p }));
      const first = perms[0];
      if (domid !== 0 && first) perms[0] = { domid, access: first.access };
      created.push(at);
      const child: Node = { value: Buffer.alloc(0), perms, children: new Map() };
      node.children.set(seg, child);
      node = child;
    }
    if (domid !== 0 && countOwned(this.root, domid) > NODE_QUOTA_PER_DOMAIN) {
      // Roll back what was just created.
      const top = created[0];
      if (top) this.lookup(parentOf(top))?.children.delete(top.slice(top.lastIndexOf("/") + 1));
      throw new XenstoreError("ENOSPC", op, path);
    }
    for (const p of created) changes.push({ path: p, removed: false, perms: this.lookup(p)?.perms ?? [] });
    return node;
  }

  write(path: string, value: Buffer, domid: number): Change[] {
    const changes: Change[] = [];
    const node = this.ensure(path, domid, "WRITE", changes);
    node.value = value;
    if (!changes.some((c) => c.path === path)) changes.push({ path, removed: false, perms: node.perms });
    return changes;
  }

  mkdir(path: string, domid: number): Change[] {
    const changes: Change[] = [];
    this.ensure(path, domid, "MKDIR", changes);
    return changes;
  }

  rm(path: string, domid: number): Change[] {
    if (path === "/") throw new XenstoreError("EINVAL", "RM", path);
    const node = this.lookup(path);
    if (!node) {
      // xenstored: removing a missing node whose parent exists is not an error.
      if (this.lookup(parentOf(path))) return [];
      throw new XenstoreError("ENOENT", "RM", path);
    }
    if (!allowed(node.perms, domid, "w")) throw new XenstoreError("EACCES", "RM", path);
    this.lookup(parentOf(path))?.children.delete(path.slice(path.lastIndexOf("/") + 1));
    return [{ path, removed: true, perms: node.perms }];
  }

  setPerms(path: string, perms: Perm[], domid: number): Change[] {
    const node = this.lookup(path);
    if (!node) throw new XenstoreError("ENOENT", "SET_PERMS", path);
    if (!allowed(node.perms, domid, "w")) throw new XenstoreError("EACCES", "SET_PERMS", path);
    if (domid !== 0 && perms[0]?.domid !== node.perms[0]?.domid) {
      throw new XenstoreError("EPERM", "SET_PERMS", path);
    }
    node.perms = perms;
    return [{ path, removed: false, perms }];
  }
}

export interface TxOp {
  readonly kind: "write" | "mkdir" | "rm" | "setPerms";
  readonly path: string;
  readonly value?: Buffer;
  readonly perms?: Perm[];
}

/** A transaction: a private copy of the tree, the paths it touched, and the mutations to replay on commit. */
export class Transaction {
  readonly touched = new Set<string>();
  readonly ops: TxOp[] = [];
  constructor(
    readonly id: number,
    readonly tree: Tree,
    readonly startGeneration: number,
  ) {}
}

/** Whether two touched paths interfere: the same node, or one inside the other. */
export function pathsConflict(a: string, b: string): boolean {
  return isAncestorOrSelf(a, b) || isAncestorOrSelf(b, a);
}
