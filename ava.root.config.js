// Privileged tests: need root, the real kernel, network namespaces and radvd. Run by scripts/test-root.sh.
export default {
  files: ["{packages/*,guest-agent,host-plugin}/dist/test/**/*.root.test.js", "test/dist/**/*.root.test.js"],
  nodeArguments: ["--enable-source-maps"],
  concurrency: 1,
  serial: true,
  // The watchdog for a test that hangs; the 50-migration test alone takes ~100 s on 2 cores.
  timeout: "300s",
};
