// Bundles the viewer (src/main.js + three + @pixiv/three-vrm from node_modules)
// into static/viewer.js, the one script the Python package serves, so the viewer
// works offline. Run `npm ci && npm run build` here after changing src/ or the
// pinned versions in package.json, and commit static/.
import { build } from 'esbuild';
import { readFileSync, writeFileSync } from 'node:fs';

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
