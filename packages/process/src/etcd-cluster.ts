// A real etcd cluster on loopback, for the control server's tests and the lab's fan-out bench: Debian's
// /usr/bin/etcd (scripts/setup.sh installs etcd-server) started once per member on free 127.0.0.1 ports, each
// member stopped by its own PID and its data removed. The only module that spawns etcd; it talks to the members
// through their JSON gateway (no etcdctl). Imported as @xenroam/process/etcd-cluster, so the agents and the
// host plugin, which load @xenroam/process, never load it.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The etcd run here: Debian's, or the one XENROAM_ETCD names (as XENROAM_<NAME> does for every program). */
export const ETCD = process.env.XENROAM_ETCD ?? "/usr/bin/etcd";

export interface EtcdClusterOptions {
  /** Serve clients over TLS with this certificate and its key (PEM files); this helper itself uses a second,
   * plain listener of each member. */
  readonly tls?: { readonly cert: string; readonly key: string };
}

interface Member {
  readonly name: string;
  readonly clientPort: number;
  /** Where this helper reaches the member's JSON gateway: the client port, or a plain one beside a TLS one. */
  readonly gatewayPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  child: ChildProcess | undefined;
  exited: Promise<void>;
  log: string[];
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One member of a cluster on one machine's loopback, as etcdMemberArgs starts it. */
export interface EtcdMemberSpec {
  readonly name: string;
  readonly dataDir: string;
  readonly clientPort: number;
  /** A plain listener beside a TLS client port (the JSON gateway for helpers); the client port when equal. */
  readonly gatewayPort: number;
  readonly peerPort: number;
  /** Every member, this one included, by name and peer port. */
  readonly cluster: ReadonlyArray<{ readonly name: string; readonly peerPort: number }>;
  /** "new" when the cluster is made; a member restarted on its data ignores it (it rejoins as it was). */
  readonly state: "new" | "existing";
  readonly token: string;
  readonly tls?: { readonly cert: string; readonly key: string };
}

/**
 * etcd's command line for one member on 127.0.0.1: this launcher's and the lab's (whose members run under its
 * supervisor, in the router's namespace). A 50 ms heartbeat and a 500 ms election timeout: on loopback a
 * leader is elected (again) in well under a second.
 */
export function etcdMemberArgs(m: EtcdMemberSpec): string[] {
  const peer = (port: number) => `http://127.0.0.1:${port}`;
  const client = `${m.tls ? "https" : "http"}://127.0.0.1:${m.clientPort}`;
  const listen =
    m.tls && m.gatewayPort !== m.clientPort ? `${client},http://127.0.0.1:${m.gatewayPort}` : client;
  return [
    ...["--name", m.name, "--data-dir", m.dataDir],
    ...["--listen-client-urls", listen, "--advertise-client-urls", client],
    ...(m.tls ? ["--cert-file", m.tls.cert, "--key-file", m.tls.key] : []),
    ...["--listen-peer-urls", peer(m.peerPort), "--initial-advertise-peer-urls", peer(m.peerPort)],
    ...["--initial-cluster", m.cluster.map((x) => `${x.name}=${peer(x.peerPort)}`).join(",")],
    ...["--initial-cluster-state", m.state, "--initial-cluster-token", m.token],
    ...["--heartbeat-interval", "50", "--election-timeout", "500"],
    ...["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"],
  ];
}

/** A member as it sees itself: its id, the leader it knows ("0": none), the revision it has applied. */
export interface MemberView {
  readonly member: number;
  readonly id?: string;
  readonly leader?: string;
  readonly revision?: number;
}

async function gatewayPost(port: number, path: string, body: unknown): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: "POST",
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const json: unknown = await res.json();
  if (!res.ok) throw new Error(`etcd ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** The revision the member on `port` has applied (its own view: no quorum read). */
async function appliedRevisionAt(port: number): Promise<number> {
  const all = Buffer.from("\0").toString("base64"); // the gateway takes keys in base64; [\0, \0) is every key
  const res = await gatewayPost(port, "/v3/kv/range", {
    key: all,
    range_end: all,
    serializable: true,
    count_only: true,
  });
  return Number((res as { header: { revision: string } }).header.revision);
}

/**
 * Each member's view through its JSON gateway on 127.0.0.1 (`ports`, one a member, in member order); a
 * member that does not answer has only its index. Also run inside the lab's router namespace, where the
 * lab's members listen (`memberViewsScript`).
 */
export async function memberViews(ports: readonly number[]): Promise<MemberView[]> {
  return Promise.all(
    ports.map(async (port, member) => {
      try {
        const status = (await gatewayPost(port, "/v3/maintenance/status", {})) as {
          header: { member_id: string };
          leader: string;
        };
        return {
          member,
          id: status.header.member_id,
          leader: status.leader,
          revision: await appliedRevisionAt(port),
        };
      } catch {
        return { member };
      }
    }),
  );
}

/** A `node -e` program that prints memberViews(ports) as JSON: for members in another network namespace. */
export function memberViewsScript(ports: readonly number[]): string {
  const self = JSON.stringify(import.meta.url);
  return `import(${self}).then((m) => m.memberViews(${JSON.stringify(ports)})).then((v) => console.log(JSON.stringify(v)));`;
}

/** What a process that ends before `stop` (a crash) leaves: its members are killed, their data removed. */
const running = new Set<ChildProcess>();
const roots = new Set<string>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

export class EtcdCluster {
  private constructor(
    private readonly root: string,
    private readonly members: Member[],
    private readonly token: string,
    private readonly options: EtcdClusterOptions,
  ) {}

  /**
   * Starts `size` members and resolves once every one answers healthy (a leader elected, reads served).
   * Data lives in tmpfs when the machine has one: etcd fsyncs every write, and its users (tests, the bench)
   * only need it to survive a member's restart, not the machine's.
   */
  static async start(size = 3, options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
    try {
      accessSync(ETCD, constants.X_OK);
    } catch {
      throw new Error(`${ETCD} is not installed: run \`npm run setup\` (it installs Debian's etcd-server)`);
    }
    const base = existsSync("/dev/shm") ? "/dev/shm" : tmpdir();
    const root = mkdtempSync(join(base, "xr-etcd-"));
    roots.add(root);
    const members: Member[] = [];
    for (let i = 0; i < size; i++) {
      const dataDir = join(root, `m${i}`);
      mkdirSync(dataDir, { mode: 0o700 });
      const clientPort = await freePort();
      members.push({
        name: `m${i}`,
        clientPort,
        gatewayPort: options.tls ? await freePort() : clientPort,
        peerPort: await freePort(),
        dataDir,
        child: undefined,
        exited: Promise.resolve(),
        log: [],
      });
    }
    const cluster = new EtcdCluster(root, members, `xr-etcd-${randomBytes(6).toString("hex")}`, options);
    try {
      for (const m of members) cluster.spawn(m, "new");
      await cluster.healthy(members, 20_000);
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  /** Client endpoints, `127.0.0.1:PORT`, one a member. */
  get endpoints(): string[] {
    return this.members.map((m) => `127.0.0.1:${m.clientPort}`);
  }

  /** The cluster as `xenroam-control serve --store` takes it. */
  get url(): string {
    return `${this.options.tls ? "etcds" : "etcd"}://${this.endpoints.join(",")}`;
  }

  /** Kills member `i` (SIGKILL: a crash, no goodbye to its peers); its data stays for `restart`. */
  async kill(i: number): Promise<void> {
    const m = this.member(i);
    m.child?.kill("SIGKILL");
    await m.exited;
  }

  /** Starts member `i` again on its data and resolves once it is healthy (caught up with the leader). */
  async restart(i: number): Promise<void> {
    const m = this.member(i);
    if (m.child) throw new Error(`etcd member ${m.name} is still running`);
    this.spawn(m, "existing");
    await this.healthy([m], 20_000);
  }

  /** Which member leads now, as the running members see it. */
  async leader(): Promise<number> {
    const views = await memberViews(this.members.map((m) => (m.child ? m.gatewayPort : 0)));
    const leader = views.find((v) => v.leader && v.leader !== "0")?.leader;
    const i = views.findIndex((v) => v.id !== undefined && v.id === leader);
    if (i < 0) throw new Error("no etcd member knows a leader");
    return i;
  }

  /** The key-value revision member `i` has applied (its own view: no quorum read). */
  async appliedRevision(i: number): Promise<number> {
    return appliedRevisionAt(this.member(i).gatewayPort);
  }

  /** Puts a key as any etcd client would (the JSON gateway of a running member). */
  async put(key: string, value: string): Promise<void> {
    const b64 = (x: string) => Buffer.from(x).toString("base64");
    await this.post(this.running(), "/v3/kv/put", { key: b64(key), value: b64(value) });
  }

  /** The keys that start with `prefix`. */
  async keys(prefix: string): Promise<string[]> {
    const p = Buffer.from(prefix);
    const end = Buffer.from(p);
    end[end.length - 1] = (end[end.length - 1] as number) + 1;
    const res = (await this.post(this.running(), "/v3/kv/range", {
      key: p.toString("base64"),
      range_end: end.toString("base64"),
      keys_only: true,
    })) as { kvs?: Array<{ key: string }> };
    return (res.kvs ?? []).map((kv) => Buffer.from(kv.key, "base64").toString());
  }

  /** Revokes a lease (as when its holder stops renewing it): its keys go at once. */
  async revokeLease(id: string): Promise<void> {
    await this.post(this.running(), "/v3/lease/revoke", { ID: id });
  }

  /**
   * Turns etcd's authentication on, as an admin would: a root user, and `user` (its role of the same name)
   * allowed to read and write the keys under `prefix` only.
   */
  async enableAuth(user: string, password: string, prefix: string): Promise<void> {
    const m = this.running();
    const b64 = (x: Buffer) => x.toString("base64");
    const end = Buffer.from(prefix);
    end[end.length - 1] = (end[end.length - 1] as number) + 1;
    await this.post(m, "/v3/auth/user/add", { name: "root", password: randomBytes(12).toString("hex") });
    await this.post(m, "/v3/auth/user/grant", { user: "root", role: "root" });
    await this.post(m, "/v3/auth/role/add", { name: user });
    await this.post(m, "/v3/auth/role/grant", {
      name: user,
      perm: { permType: "READWRITE", key: b64(Buffer.from(prefix)), range_end: b64(end) },
    });
    await this.post(m, "/v3/auth/user/add", { name: user, password });
    await this.post(m, "/v3/auth/user/grant", { user, role: user });
    await this.post(m, "/v3/auth/enable", {});
  }

  /** Compacts the key-value history up to `revision`: watches from before it can no longer resume. */
  async compact(revision: number): Promise<void> {
    await this.post(this.running(), "/v3/kv/compaction", { revision: String(revision), physical: true });
  }

  /**
   * Stops every member, each by its own PID (SIGTERM, SIGKILL after 5 s), and removes their data. One after
   * the other: a leader told to stop hands its leadership over first, which takes seconds when its peers are
   * stopping too, and milliseconds when they are not.
   */
  async stop(): Promise<void> {
    for (const m of this.members) {
      const child = m.child;
      if (!child) continue;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await m.exited;
      clearTimeout(timer);
    }
    rmSync(this.root, { recursive: true, force: true });
    roots.delete(this.root);
  }

  private running(): Member {
    const m = this.members.find((x) => x.child);
    if (!m) throw new Error("no etcd member is running");
    return m;
  }

  private member(i: number): Member {
    const m = this.members[i];
    if (!m) throw new Error(`no etcd member ${i} (the cluster has ${this.members.length})`);
    return m;
  }

  private spawn(m: Member, state: "new" | "existing"): void {
    const args = etcdMemberArgs({
      ...m,
      cluster: this.members,
      state,
      token: this.token,
      ...(this.options.tls ? { tls: this.options.tls } : {}),
    });
    const child = spawn(ETCD, args, { stdio: ["ignore", "ignore", "pipe"] });
    m.child = child;
    m.log = [];
    running.add(child);
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      m.log.push(...chunk.split("\n").filter(Boolean));
      if (m.log.length > 40) m.log.splice(0, m.log.length - 40);
    });
    m.exited = new Promise<void>((resolve) => {
      child.once("error", (err) => {
        m.log.push(String(err));
        resolve();
      });
      child.once("exit", () => resolve());
    }).then(() => {
      running.delete(child);
      if (m.child === child) m.child = undefined;
    });
  }

  private async healthy(members: Member[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const m of members) {
      for (;;) {
        if (!m.child) {
          throw new Error(`etcd member ${m.name} exited while starting:\n${m.log.join("\n")}`);
        }
        const ok = await fetch(`http://127.0.0.1:${m.gatewayPort}/health`, {
          signal: AbortSignal.timeout(1000),
        })
          .then(async (r) => ((await r.json()) as { health?: string }).health === "true")
          .catch(() => false);
        if (ok) break;
        if (Date.now() > deadline) {
          throw new Error(`etcd member ${m.name} not healthy after ${timeoutMs} ms:\n${m.log.join("\n")}`);
        }
        await sleep(50);
      }
    }
  }

  private post(m: Member, path: string, body: unknown): Promise<unknown> {
    return gatewayPost(m.gatewayPort, path, body);
  }
}
