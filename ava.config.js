// Unit tests: run anywhere, no privileges. Root-only tests end in .root.test.js and run from ava.root.config.js.
export default {
  files: [
    "{packages/*,guest-agent,host-plugin}/dist/test/**/*.test.js",
    "test/dist/**/*.test.js",
    "!**/*.root.test.js",
  ],
  nodeArguments: ["--enable-source-maps"],
  timeout: "60s",
  watchMode: { ignoreChanges: ["**/*.ts"] },
};
