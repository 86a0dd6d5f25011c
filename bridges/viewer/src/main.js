// hop-live browser viewer: draws the live pose stream as a skeleton, or drives a
// VRM avatar the user loads (its body, and its mouth and blinks when the stream
// carries expressions). Frames arrive as JSON (see bridges/README.md), wait in a
// small jitter buffer and are played a couple of frames behind, interpolated by
// capture time, so network jitter does not show as stutter.
//
// The WebSocket lives in a worker: while the page's own thread is busy (parsing a
// VRM, compiling its shaders) the worker keeps reading and stamping frames, so the
// server never sees a stalled client and drops nothing; the page takes the backlog
// when it is free. When the stream ends the status says "disconnected" and the
// latency figure stops (it shows "–" until frames flow again).
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { VRMLoaderPlugin, VRMUtils } from '@pixiv/three-vrm';

const params = new URLSearchParams(location.search);
const BUFFER_FRAMES = clampNumber(params.get('buffer'), 2, 0, 30); // playback delay, in frame intervals
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 5000;
const STALE_S = 1.0; // no frame for this long: the stream has stopped, latency is not shown
const MOUTH = ['aa', 'ih', 'ou', 'ee', 'oh'];

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------
// Scene

const renderer = new THREE.WebGLRenderer({ canvas: $('scene'), antialias: true });
renderer.setPixelRatio(window.devicePixelRatio);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x1d2127);
scene.add(new THREE.HemisphereLight(0xffffff, 0x404050, 2.0));
const sun = new THREE.DirectionalLight(0xffffff, 1.5);
sun.position.set(1, 2, 3);
scene.add(sun);
const grid = new THREE.GridHelper(4, 16, 0x556070, 0x333a44);
scene.add(grid);

const camera = new THREE.PerspectiveCamera(35, 1, 0.01, 100);
const controls = new OrbitControls(camera, renderer.domElement);
frameCamera(new THREE.Vector3(0, 0.05, 0), 2.4, -0.75); // the skeleton: spine at the origin, y up

function frameCamera(target, distance, floorY) {
  controls.target.copy(target);
  camera.position.set(target.x, target.y + 0.1, target.z + distance);
  grid.position.y = floorY;
  controls.update();
}

function resize() {
  const { innerWidth: w, innerHeight: h } = window;
  renderer.setSize(w, h, false);
  camera.aspect = w / h;
  camera.updateProjectionMatrix();
}
window.addEventListener('resize', resize);
resize();

// ---------------------------------------------------------------------------
// Skeleton figure: a sphere per joint, a cylinder per bone, rebuilt on hello.

const SIDE_COLORS = { left: 0x4fa3ff, right: 0xff7a59, centre: 0xd8d8d8 };
const skeletonFigure = { group: new THREE.Group(), joints: [], bones: [] };
scene.add(skeletonFigure.group);

function sideOf(name) {
  if (name.startsWith('left')) return 'left';
  if (name.startsWith('right')) return 'right';
  return 'centre';
}

function buildSkeleton(description) {
  const figure = skeletonFigure;
  figure.group.clear();
  figure.joints = description.joints.map((name) => {
    const mesh = new THREE.Mesh(new THREE.SphereGeometry(0.03, 16, 12),
      new THREE.MeshStandardMaterial({ color: SIDE_COLORS[sideOf(name)] }));
    figure.group.add(mesh);
    return mesh;
  });
  figure.bones = description.bones.map(([parent, child]) => {
    const mesh = new THREE.Mesh(new THREE.CylinderGeometry(0.018, 0.018, 1, 12),
      new THREE.MeshStandardMaterial({ color: SIDE_COLORS[sideOf(description.joints[child])] }));
    figure.group.add(mesh);
    return { mesh, parent, child };
  });
}

const UP = new THREE.Vector3(0, 1, 0);
const tmpA = new THREE.Vector3();
const tmpB = new THREE.Vector3();

function poseSkeleton(joints) {
  const figure = skeletonFigure;
  figure.joints.forEach((mesh, i) => mesh.position.fromArray(joints[i]));
  for (const { mesh, parent, child } of figure.bones) {
    tmpA.fromArray(joints[parent]);
    tmpB.fromArray(joints[child]).sub(tmpA); // bone vector
    const length = tmpB.length();
    mesh.position.copy(tmpA).addScaledVector(tmpB, 0.5);
    mesh.scale.set(1, Math.max(length, 1e-6), 1);
    mesh.quaternion.setFromUnitVectors(UP, tmpB.normalize());
  }
}

// ---------------------------------------------------------------------------
// Jitter buffer: frames are played BUFFER_FRAMES intervals behind the newest
// one, on a clock mapped from the sender's capture time to performance.now().

class JitterBuffer {
  constructor(delayFrames) {
    this.delayFrames = delayFrames;
    this.frames = [];
    this.interval = 1 / 15; // seconds between frames, learnt from capture times
    this.offsets = []; // [arrival, arrival - capture] over the last two seconds
    this.offset = null;
    this.underruns = 0;
  }

  push(frame, arrival) {
    const newest = this.frames[this.frames.length - 1];
    if (newest && frame.captureUnix <= newest.captureUnix) return; // late or repeated: already past it
    if (newest) {
      const step = frame.captureUnix - newest.captureUnix;
      if (step > 0 && step < 1) this.interval += 0.1 * (step - this.interval);
    }
    // The smallest arrival-minus-capture seen lately is the clock offset plus
    // the fastest transport: the delay we can count on.
    this.offsets.push([arrival, arrival - frame.captureUnix]);
    while (this.offsets[0][0] < arrival - 2) this.offsets.shift();
    this.offset = Math.min(...this.offsets.map(([, offset]) => offset));
    this.frames.push(frame);
    if (this.frames.length > 120) this.frames.shift();
  }

  // The pose to show now: two frames and a blend factor, or null before any frame.
  sample(now) {
    if (this.frames.length === 0) return null;
    const target = now - this.offset - this.delayFrames * this.interval;
    let i = this.frames.length - 1;
    while (i > 0 && this.frames[i].captureUnix > target) i -= 1;
    this.frames.splice(0, Math.max(0, i - 1)); // keep one frame behind for safety
    i = Math.min(i, 1);
    const a = this.frames[i];
    const b = this.frames[i + 1];
    if (!b) {
      if (target > a.captureUnix + this.interval) this.underruns += 1;
      return { a, b: a, alpha: 0 };
    }
    const alpha = THREE.MathUtils.clamp((target - a.captureUnix) / (b.captureUnix - a.captureUnix), 0, 1);
    return { a, b, alpha };
  }

  get depth() {
    return this.frames.length;
  }
}

function lerpJoints(a, b, alpha) {
  return a.map((p, j) => [0, 1, 2].map((k) => p[k] + (b[j][k] - p[k]) * alpha));
}

// ---------------------------------------------------------------------------
// VRM avatar (optional): normalized humanoid pose from the same frames.

let avatar = null;
const qa = new THREE.Quaternion();
const qb = new THREE.Quaternion();

function blendPose(a, b, alpha, isVrm0) {
  // VRM 0.x rigs face -z: mirror x and z, as three-vrm's own examples do.
  const sx = isVrm0 ? -1 : 1;
  const pose = {};
  for (const [bone, from] of Object.entries(a)) {
    const to = b[bone] ?? from;
    const entry = {};
    if (from.rotation && to.rotation) {
      qa.fromArray(from.rotation);
      qb.fromArray(to.rotation);
      if (qa.dot(qb) < 0) qb.set(-qb.x, -qb.y, -qb.z, -qb.w);
      qa.slerp(qb, alpha);
      entry.rotation = [sx * qa.x, qa.y, sx * qa.z, qa.w];
    }
    if (from.position && to.position) {
      const p = [0, 1, 2].map((k) => from.position[k] + (to.position[k] - from.position[k]) * alpha);
      entry.position = [sx * p[0], p[1], sx * p[2]];
    }
    pose[bone] = entry;
  }
  return pose;
}

async function loadVrm(file) {
  const url = URL.createObjectURL(file);
  const loader = new GLTFLoader();
  loader.register((parser) => new VRMLoaderPlugin(parser));
  try {
    const gltf = await loader.loadAsync(url);
    const vrm = gltf.userData.vrm;
    if (!vrm) throw new Error(`${file.name} is a glTF file without the VRM extension; load a .vrm avatar`);
    VRMUtils.removeUnnecessaryVertices(gltf.scene);
    VRMUtils.rotateVRM0(vrm);
    // Compile its shaders without blocking the page (KHR_parallel_shader_compile where the
    // browser has it) before it is first drawn.
    await renderer.compileAsync(vrm.scene, camera, scene);
    if (avatar) {
      scene.remove(avatar.scene);
      VRMUtils.deepDispose(avatar.scene);
    }
    avatar = vrm;
    scene.add(vrm.scene);
    vrm.scene.updateMatrixWorld(true);
    const chest = vrm.humanoid.getNormalizedBoneNode('upperChest') ?? vrm.humanoid.getNormalizedBoneNode('spine');
    frameCamera(chest.getWorldPosition(new THREE.Vector3()), 2.0, 0);
    skeletonFigure.group.visible = false;
    $('show-skeleton').hidden = false;
    $('reply').textContent = `loaded ${file.name}`;
  } catch (error) {
    $('reply').textContent = `could not load ${file.name}: ${error.message}`;
  } finally {
    URL.revokeObjectURL(url);
  }
}

$('vrm-file').addEventListener('change', (event) => {
  if (event.target.files[0]) loadVrm(event.target.files[0]);
});
$('show-skeleton').addEventListener('click', () => {
  if (avatar) {
    scene.remove(avatar.scene);
    VRMUtils.deepDispose(avatar.scene);
    avatar = null;
  }
  skeletonFigure.group.visible = true;
  $('show-skeleton').hidden = true;
  frameCamera(new THREE.Vector3(0, 0.05, 0), 2.4, -0.75);
});
window.addEventListener('dragover', (event) => {
  event.preventDefault();
  document.body.classList.add('dragging');
});
window.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
window.addEventListener('drop', (event) => {
  event.preventDefault();
  document.body.classList.remove('dragging');
  const file = event.dataTransfer.files[0];
  if (file) loadVrm(file);
});

// ---------------------------------------------------------------------------
// Connection with automatic reconnect, read by a worker.

const stats = {
  connected: false, received: 0, lost: 0, rendered: 0, reconnects: 0, streamFps: 0, renderFps: 0,
  latencyMs: null, lastIndex: null, speaking: false, mouth: null, lastReply: null, lastArrival: null,
  transport: null,
};
window.hopViewer = { stats, get avatar() { return avatar; } }; // read by the tests and handy in the console

let buffer = new JitterBuffer(BUFFER_FRAMES);
let reconnectDelay = RECONNECT_MIN_MS;

function socketUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const query = new URLSearchParams({ format: 'json' });
  if (params.get('token')) query.set('token', params.get('token'));
  return `${scheme}://${location.host}/ws?${query}`;
}

// The worker: one WebSocket at a time; every message parsed and stamped with its arrival
// (Unix seconds from the worker's clock) the moment it comes in.
const SOCKET_WORKER = `
let socket = null;
const clock = () => (performance.timeOrigin + performance.now()) / 1000;
onmessage = (event) => {
  const order = event.data;
  if (order.type === 'connect') {
    socket = new WebSocket(order.url);
    socket.onopen = () => postMessage({ type: 'open' });
    socket.onclose = (e) => { socket = null; postMessage({ type: 'close', reason: e.reason }); };
    socket.onmessage = (e) => {
      const arrival = clock();
      let message = null;
      try { message = JSON.parse(e.data); } catch (error) { return; }
      postMessage({ type: 'message', message, arrival });
    };
  } else if (order.type === 'send' && socket && socket.readyState === 1) {
    socket.send(order.data);
  }
};
`;

// Either the worker or, where workers cannot run, a WebSocket on this thread; both call the
// same handlers with arrival times on this page's performance.now() clock, in seconds.
function openTransport(handlers) {
  const toPageClock = (unixSeconds) => unixSeconds - performance.timeOrigin / 1000;
  try {
    const worker = new Worker(URL.createObjectURL(new Blob([SOCKET_WORKER], { type: 'text/javascript' })));
    worker.onmessage = ({ data }) => {
      if (data.type === 'open') handlers.open();
      else if (data.type === 'close') handlers.close(data.reason);
      else handlers.message(data.message, toPageClock(data.arrival));
    };
    stats.transport = 'worker';
    return {
      connect: (url) => worker.postMessage({ type: 'connect', url }),
      send: (text) => worker.postMessage({ type: 'send', data: text }),
    };
  } catch (error) {
    let socket = null;
    stats.transport = 'page';
    return {
      connect(url) {
        socket = new WebSocket(url);
        socket.addEventListener('open', handlers.open);
        socket.addEventListener('close', (event) => handlers.close(event.reason));
        socket.addEventListener('message', (event) => handlers.message(JSON.parse(event.data), performance.now() / 1000));
      },
      send(text) {
        if (socket && socket.readyState === WebSocket.OPEN) socket.send(text);
      },
    };
  }
}

const transport = openTransport({
  open() {
    stats.connected = true;
    reconnectDelay = RECONNECT_MIN_MS;
    setStatus('connected', 'connected');
  },
  close(reason) {
    stats.connected = false;
    // The stream has ended: nothing more to play, and no latency to show.
    buffer = new JitterBuffer(BUFFER_FRAMES);
    stats.latencyMs = null;
    stats.lastArrival = null;
    const why = reason ? ` (${reason})` : '';
    setStatus('disconnected', `disconnected${why}, retrying in ${(reconnectDelay / 1000).toFixed(1)} s`);
    showFigures(performance.now() / 1000);
    stats.reconnects += 1;
    setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
  },
  message: onMessage,
});

function connect() {
  transport.connect(socketUrl());
}

function onMessage(message, arrival) {
  if (message.type === 'hello') {
    buildSkeleton(message.skeleton);
    buffer = new JitterBuffer(BUFFER_FRAMES);
    stats.lastIndex = null;
  } else if (message.type === 'pose') {
    if (stats.lastIndex !== null && message.index > stats.lastIndex + 1) stats.lost += message.index - stats.lastIndex - 1;
    stats.lastIndex = message.index;
    stats.received += 1;
    stats.lastArrival = arrival;
    receivedTimes.push(arrival);
    buffer.push(message, arrival);
  } else {
    stats.lastReply = message;
    $('reply').textContent = message.type === 'error' ? `rejected: ${message.detail}` : 'control accepted';
  }
}

function sendControl(fields) {
  if (stats.connected) transport.send(JSON.stringify({ type: 'control', ...fields }));
}
$('mute').addEventListener('change', (event) => sendControl({ mute: event.target.checked }));
$('intensity').addEventListener('change', (event) => sendControl({ intensity: Number(event.target.value) }));

function setStatus(className, text) {
  $('status').className = className;
  $('status').textContent = text;
}

// ---------------------------------------------------------------------------
// Render loop and live figures.

const receivedTimes = [];
const renderTimes = [];
let lastFigures = 0;
let lastRender = performance.now() / 1000;

function ratePerSecond(times, now) {
  while (times.length && times[0] < now - 1) times.shift();
  return times.length;
}

function blendExpressions(a, b, alpha) {
  if (!a && !b) return null;
  const out = {};
  for (const name of new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})])) {
    const from = a?.[name] ?? 0;
    out[name] = from + ((b?.[name] ?? 0) - from) * alpha;
  }
  return out;
}

function render() {
  requestAnimationFrame(render);
  const now = performance.now() / 1000;
  const stale = stats.lastArrival === null || now - stats.lastArrival > STALE_S;
  const shown = stale ? null : buffer.sample(now);
  if (shown) {
    const { a, b, alpha } = shown;
    if (skeletonFigure.group.visible && skeletonFigure.joints.length === a.joints.length) {
      poseSkeleton(lerpJoints(a.joints, b.joints, alpha));
    }
    const expressions = blendExpressions(a.expressions, b.expressions, alpha);
    if (avatar) {
      avatar.humanoid.setNormalizedPose(blendPose(a.pose, b.pose, alpha, avatar.meta?.metaVersion === '0'));
      if (expressions && avatar.expressionManager) {
        for (const [name, value] of Object.entries(expressions)) {
          if (avatar.expressionManager.getExpression(name)) avatar.expressionManager.setValue(name, value);
        }
      }
    }
    stats.mouth = expressions ? Math.max(...MOUTH.map((name) => expressions[name] ?? 0)) : null;
    // Capture-to-display latency on this machine's wall clock (exact when the
    // engine runs on the same machine, offset by the clock difference otherwise).
    const displayedCapture = a.captureUnix + (b.captureUnix - a.captureUnix) * alpha;
    stats.latencyMs = Date.now() - displayedCapture * 1000;
    stats.speaking = b.speaking;
  } else if (stale) {
    stats.latencyMs = null; // the stream has stopped: an age that only grows is no latency
  }
  if (avatar) avatar.update(now - lastRender);
  lastRender = now;
  controls.update();
  renderer.render(scene, camera);
  stats.rendered += 1;
  renderTimes.push(now);
  if (now - lastFigures > 0.25) {
    lastFigures = now;
    showFigures(now);
  }
}

function showFigures(now) {
  stats.streamFps = ratePerSecond(receivedTimes, now);
  stats.renderFps = ratePerSecond(renderTimes, now);
  $('stream-fps').textContent = `${stats.streamFps} fps`;
  $('render-fps').textContent = `${stats.renderFps} fps`;
  $('latency').textContent = stats.latencyMs === null ? '–' : `${stats.latencyMs.toFixed(0)} ms`;
  $('buffer').textContent = `${buffer.depth} frames, ${BUFFER_FRAMES} behind, ${buffer.underruns} underruns`;
  $('lost').textContent = `${stats.lost} frames`;
  $('speaking').textContent = stats.speaking ? 'yes' : 'no';
  $('mouth').textContent = stats.mouth === null ? '–' : stats.mouth.toFixed(2);
  if (stats.connected) {
    const flowing = stats.lastArrival !== null && now - stats.lastArrival <= STALE_S;
    setStatus(flowing ? 'connected' : 'waiting', flowing ? 'connected' : 'connected, no frames');
  }
}

function clampNumber(text, fallback, min, max) {
  const value = Number(text ?? fallback);
  return Number.isFinite(value) ? Math.min(Math.max(value, min), max) : fallback;
}

connect();
render();
