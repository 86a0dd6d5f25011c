// Bundles the viewer (src/main.js + three + @pixiv/three-vrm from node_modules)
// into static/viewer.js, the one script the Python package serves, so the viewer
// works offline. Run `npm ci && node build.mjs` here after changing src/, this
// file or the pinned versions in package.json / package-lock.json, and commit static/.
//
// It also writes static/viewer.js.source-sha256: the SHA-256 of every source and
// of the two files built from them, in `sha256sum -c` format (paths relative to
// this folder). tests/bridges/test_bridges_viewer_bundle.py recomputes it, so a
// source changed without rebuilding, or a hand-edited bundle, fails the tests.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';

await build({
  entryPoints: ['src/main.js'],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2020',
  outfile: 'static/viewer.js',
  legalComments: 'none', // the licences go to static/third-party-licenses.txt instead
  logLevel: 'info',
});

const licences = [
  ['three', 'node_modules/three/LICENSE'],
  ['@pixiv/three-vrm', 'node_modules/@pixiv/three-vrm/LICENSE'],
].map(([name, file]) => {
  const { version } = JSON.parse(readFileSync(`node_modules/${name}/package.json`, 'utf8'));
  return `${name} ${version}\n\n${readFileSync(file, 'utf8').trim()}\n`;
});
writeFileSync('static/third-party-licenses.txt',
  `static/viewer.js bundles the following packages.\n\n${licences.join('\n---\n\n')}`);

const sources = [
  ...readdirSync('src', { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => `${entry.parentPath ?? entry.path}/${entry.name}`.replaceAll('\\', '/')),
  'build.mjs', 'package.json', 'package-lock.json',
].sort();
const built = ['static/viewer.js', 'static/third-party-licenses.txt'];
const sha256 = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');
writeFileSync('static/viewer.js.source-sha256', [
  '# Written by build.mjs: sources, then what was built from them. Check in bridges/viewer: sha256sum -c static/viewer.js.source-sha256',
  ...[...sources, ...built].map((file) => `${sha256(file)}  ${file}`),
  '',
].join('\n'));
