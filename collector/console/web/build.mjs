// build.mjs copies the console's front-end files into dist/, which the Go
// binary embeds (collector/console, go:embed): the asciinema-player bundle
// from node_modules (run `npm ci` first; `make ui` does both) and the
// console's own script and style sheet from src/. Nothing is transpiled:
// the player ships a ready bundle, and the console's script is plain
// JavaScript. dist/VERSIONS records what was copied, from package-lock.json.
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const dist = "dist";
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

const player = "node_modules/asciinema-player/dist/bundle";
copyFileSync(join(player, "asciinema-player.min.js"), join(dist, "asciinema-player.min.js"));
copyFileSync(join(player, "asciinema-player.css"), join(dist, "asciinema-player.css"));
for (const f of readdirSync("src").sort()) {
  copyFileSync(join("src", f), join(dist, f));
}

const lock = JSON.parse(readFileSync("package-lock.json", "utf8"));
const lines = Object.entries(lock.packages)
  .filter(([path]) => path.startsWith("node_modules/"))
  .map(([path, p]) => `${path.slice("node_modules/".length)}@${p.version} ${p.license} ${p.integrity}`)
  .sort();
writeFileSync(join(dist, "VERSIONS"), "# npm packages behind dist/ (from package-lock.json); the player bundle includes solid-js\n" + lines.join("\n") + "\n");
