// Failover between control server replicas, measured: two real `xenroam-control serve` processes on a real
// three-member etcd cluster, and clients given both. A watcher whose replica is killed (SIGKILL, by its PID)
// while activations go on through the other misses no change; a replica down from the start is passed over; all
// down is one clear error and a watch loop that retries until one is back; a VM's registration and activation
// and a host's relay (prepared before the pause) go to the live replica.
import { formatIpv6, parsePrefix, slaacAddress } from "@xenroam/core";
import { EtcdCluster } from "@xenroam/process/etcd-cluster";
import test, { type ExecutionContext } from "ava";
import { type Change, ControlClient, ControlClientError, type SignedBinding } from "../src/index.js";
import { freePort, initialised, serve } from "./client-replicas.js";

let cluster: EtcdCluster | undefined;
test.before(async () => {
  cluster = await EtcdCluster.start(3);
});
test.after.always(() => cluster?.stop());

const SITE_A = "2001:db8:a::/64";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Logged {
  readonly event: string;
  readonly fields: Record<string, unknown>;
}

/** Two replicas on one key prefix of the cluster, the sites set, and a correspondent's and a host's tokens. */
async function replicas(t: ExecutionContext, prefix: string) {
  const { key, tokenFile, token } = initialised(t);
  const args = ["--store", `${cluster?.url}/${prefix}/`, "--key", key, "--admin-token-file", tokenFile];
  const [one, two] = await Promise.all([serve(t, args), serve(t, args)]);
  const admin = new ControlClient(two.url, { token });
  await admin.putSites({
    sites: [{ name: "a", prefix: SITE_A, gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } }],
    hosts: [{ name: "hosta", site: "a" }],
  });
  const cn = (await admin.registerPeer("cn")).token;
  const host = (await admin.registerPeer("hosta")).token;
  return { one, two, args, admin, token, cn, host };
}

/** `n` VMs, each with a proven standby (its MAC's SLAAC address in site a) and that standby's activation. */
async function fleet(admin: ControlClient, url: string, n: number) {
  const vms: Array<{ hoa: string; token: string; activation: SignedBinding; client: ControlClient }> = [];
  for (let i = 0; i < n; i++) {
    const mac = `00:16:3e:00:01:${i.toString(16).padStart(2, "0")}`;
    const hoa = `2001:db8:f::${(0x100 + i).toString(16)}`;
    const { token } = await admin.registerVm(`vm${i}`, hoa, [mac]);
    const client = new ControlClient(url, { token });
    const locator = formatIpv6(slaacAddress(parsePrefix(SITE_A), mac));
    vms.push({ hoa, token, activation: await client.registerStandby(`vm${i}`, locator), client });
  }
  return vms;
}

/**
 * The correspondent's watch loop (guest-agent Correspondent.follow) reduced to what is tested here: long polls
 * from the revision of the last change received, a back-off after a failed one.
 */
function follow(client: ControlClient, since: number, signal: AbortSignal) {
  const received: Array<Change & { at: number }> = [];
  const failures: string[] = [];
  let last = since;
  const done = (async () => {
    while (!signal.aborted) {
      try {
        const { changes } = await client.changes(last, 2000, signal);
        const at = Date.now();
        for (const c of changes) {
          received.push({ ...c, at });
          last = Math.max(last, c.revision);
        }
      } catch (err) {
        if (signal.aborted) break;
        failures.push((err as Error).message);
        await sleep(100);
      }
    }
  })();
  return { received, failures, done, since: () => last };
}

async function until(what: string, ok: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(10);
  }
}

test.serial(
  "the replica a watcher long-polls is killed while activations go on through the other: it resumes there and misses no change",
  async (t) => {
    const { one, two, admin, cn } = await replicas(t, "xr-failover-watch");
    const vms = await fleet(admin, two.url, 40);
    const logged: Logged[] = [];
    let failedOverAt = 0;
    const watcher = new ControlClient([one.url, two.url], {
      token: cn,
      log: (event, fields) => {
        failedOverAt ||= Date.now();
        logged.push({ event, fields });
      },
    });
    const { revision } = await watcher.changes(0, 0);
    t.is(watcher.base, one.url);
    const stop = new AbortController();
    const w = follow(watcher, revision, stop.signal);
    t.teardown(() => stop.abort());

    // One activation every 25 ms, through the replica that stays; the other is killed after the 15th.
    const committed: Array<{ hoa: string; revision: number; at: number }> = [];
    let killedAt = 0;
    for (const [i, vm] of vms.entries()) {
      if (i === 15) {
        killedAt = Date.now();
        t.is(await one.kill(), null);
      }
      const { revision: r } = await vm.client.activate(vm.activation);
      committed.push({ hoa: vm.hoa, revision: r, at: Date.now() });
      await sleep(25);
    }
    const lastRevision = committed.at(-1)?.revision ?? 0;
    await until("the watcher has the last activation", () => w.since() >= lastRevision);
    stop.abort();
    await w.done;

    // Every activation, in the order committed, none skipped, none twice; nothing else happened meanwhile.
    t.deepEqual(
      w.received.map((c) => [c.binding.hoa, c.binding.seq, c.binding.active]),
      vms.map((vm) => [vm.hoa, vm.activation.seq, vm.activation.locator]),
    );
    t.deepEqual(
      w.received.map((c) => c.revision),
      committed.map((c) => c.revision),
    );
    t.deepEqual(w.failures, [], "the loop never saw a failure: the client went on at the other replica");
    t.is(watcher.base, two.url);
    t.deepEqual(
      logged.map((l) => [l.event, l.fields.from, l.fields.to, l.fields.path]),
      [["control_failover", one.url, two.url, "/v1/bindings"]],
    );
    t.regex(String(logged[0]?.fields.error), /GET \/v1\/bindings\?since=\d+&wait=2000: /);

    const after = w.received.find((c) => c.at >= killedAt);
    const interruption = (after?.at ?? Number.NaN) - killedAt;
    const delays = w.received.map((c, i) => c.at - (committed[i]?.at ?? 0));
    const worst = Math.max(...delays.slice(15));
    t.log(
      `SIGKILL -> the watcher at the other replica (control_failover): ${failedOverAt - killedAt} ms; -> next change received: ${interruption} ms (activations every ~25 ms); longest commit -> received after the kill: ${worst} ms (before it: ${Math.max(...delays.slice(0, 15))} ms)`,
    );
    t.true(interruption < 2000, `${interruption} ms`);
    await two.stop();
  },
);

test.serial("a replica down from the start is passed over, and logged once", async (t) => {
  const { two, cn, token } = await replicas(t, "xr-failover-down");
  const dead = `http://127.0.0.1:${await freePort()}`;
  const logged: Logged[] = [];
  const client = new ControlClient(`${dead},${two.url}`, {
    token: cn,
    log: (event, fields) => logged.push({ event, fields }),
  });
  t.deepEqual(client.servers, [dead, two.url]);
  t.like(await client.health(), { ok: true });
  t.is(client.base, two.url, "the replica that answered is where calls go from now on");
  await client.sites();
  await client.changes(0, 0);
  t.deepEqual(
    logged.map((l) => [l.event, l.fields.from, l.fields.to]),
    [["control_failover", dead, two.url]],
  );
  t.regex(String(logged[0]?.fields.error), /ECONNREFUSED/);
  // An admin's registration is sent to the next replica only when the first surely never saw it (refused).
  const admin = new ControlClient([dead, two.url], { token });
  t.like(await admin.registerVm("late", "2001:db8:f::99", ["00:16:3e:00:09:99"]), { name: "late" });
});

test.serial(
  "every replica down: one clear error, and a watch loop that retries until one is back",
  async (t) => {
    const { one, two, args, admin, cn } = await replicas(t, "xr-failover-all");
    const [vm] = (await fleet(admin, two.url, 1)) as [Awaited<ReturnType<typeof fleet>>[number]];
    const client = new ControlClient([one.url, two.url], { token: cn, log: () => {} });
    const { revision } = await client.changes(0, 0);
    await Promise.all([one.kill(), two.kill()]);
    const err = await t.throwsAsync(client.changes(revision, 1000), { instanceOf: ControlClientError });
    t.regex(
      err?.message ?? "",
      /^no control server answered GET \/v1\/bindings \(control server http:\/\/127\.0\.0\.1:\d+: GET \/v1\/bindings\?since=\d+&wait=1000: .*ECONNREFUSED.*; control server http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED.*\)$/,
    );
    t.is(err?.status, undefined, "no server answered: nothing was refused");

    const stop = new AbortController();
    t.teardown(() => stop.abort());
    const w = follow(client, revision, stop.signal);
    await until("the loop has failed twice", () => w.failures.length >= 2);
    // The first replica comes back on its port; the VM activates through it; the loop has the change.
    const back = await serve(t, args, one.port);
    const { revision: r } = await new ControlClient(back.url, { token: vm.token }).activate(vm.activation);
    await until("the loop has the activation", () => w.since() >= r);
    stop.abort();
    await w.done;
    t.deepEqual(
      w.received.map((c) => [c.binding.hoa, c.binding.active]),
      [[vm.hoa, vm.activation.locator]],
    );
    await back.stop();
  },
);

test.serial(
  "a VM's registration and activation, and a host's relay prepared before the pause, go to the live replica",
  async (t) => {
    const { one, two, admin, host } = await replicas(t, "xr-failover-vm");
    const mac = "00:16:3e:00:02:01";
    const { token } = await admin.registerVm("vm", "2001:db8:f::201", [mac]);
    const logged: Logged[] = [];
    const log = (event: string, fields: Record<string, unknown>) => logged.push({ event, fields });
    const vm = new ControlClient([one.url, two.url], { token, log });
    const relay = new ControlClient([one.url, two.url], { token: host, timeoutMs: 2000, log });
    const locator = formatIpv6(slaacAddress(parsePrefix(SITE_A), mac));
    // Step 2 through the first replica; Dom0 renders the relay of its activation; then that replica dies.
    const standby = await vm.registerStandby("vm", locator);
    t.is(vm.base, one.url);
    const send = relay.prepareActivate(standby);
    await one.kill();
    t.true((await send()).revision > 0, "the relay at the pause went to the live replica");
    // The VM's own copy afterwards: already active (the relay took), which the mobile node counts as done.
    const again = await t.throwsAsync(vm.activate(standby), { instanceOf: ControlClientError });
    t.is(again?.status, 409);
    t.is(again?.code, "already-active");
    // The next move: registration and activation through the live replica.
    const next = await vm.registerStandby("vm", locator);
    t.true(next.seq > standby.seq);
    t.deepEqual(
      logged.map((l) => [l.event, l.fields.from, l.fields.to, l.fields.method]),
      [
        ["control_failover", one.url, two.url, "POST"],
        ["control_failover", one.url, two.url, "POST"],
      ],
      "each client logs its own move, once",
    );
    t.like(await admin.binding("2001:db8:f::201"), { active: locator, seq: standby.seq });
  },
);
