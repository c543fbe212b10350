// Bundles chat_page.mjs and the locked `ai` package into one browser module, with the
// locked esbuild: node bundle_page.mjs <out.js>
import { build } from 'esbuild';

await build({
  entryPoints: [new URL('./chat_page.mjs', import.meta.url).pathname],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  outfile: process.argv[2],
  logLevel: 'warning',
});
