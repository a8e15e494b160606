// The machine a benchmark ran on (CPU, cores, memory, OS, kernel, Node.js), read through systeminformation and
// kept beside its results; a caller adds what only it knows (the Xen and QEMU versions of the real-Xen rig).
import si from "systeminformation";

/** Facts as flat name → text pairs, in the order they are shown. */
export type MachineFacts = Readonly<Record<string, string>>;

export async function machineFacts(extra: Readonly<Record<string, string>> = {}): Promise<MachineFacts> {
  const [cpu, mem, os] = await Promise.all([si.cpu(), si.mem(), si.osInfo()]);
  const model = [cpu.manufacturer, cpu.brand].filter((s) => s.length > 0).join(" ");
  return {
    cpu: model || "unknown",
    cores: `${cpu.cores} (${cpu.physicalCores} physical)`,
    memory: `${(mem.total / 2 ** 30).toFixed(1)} GiB`,
    os: `${os.distro} ${os.release}`.trim(),
    kernel: os.kernel,
    arch: os.arch,
    node: process.version,
    ...extra,
  };
}
