// Privileged tests: need root, the real kernel, network namespaces and radvd. Run by scripts/test-root.sh.
export default {
  files: ["{packages/*,guest-agent,host-plugin}/dist/test/**/*.root.test.js", "test/dist/**/*.root.test.js"],
  nodeArguments: ["--enable-source-maps"],
  concurrency: 1,
  serial: true,
  timeout: "120s",
};
