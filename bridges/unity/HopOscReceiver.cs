// Drives a Humanoid avatar from hop-live's native OSC stream (hop-live --osc HOST:PORT).
//
// Written against Unity's documented API (MonoBehaviour, Animator.GetBoneTransform,
// HumanBodyBones, Quaternion.FromToRotation) but NOT compiled or run in Unity by
// the hop-live project: see bridges/unity/README.md. Its parser, HopOscParser.cs,
// is compiled and tested outside Unity against bridges/test_vectors/native_osc.json.
//
// A background thread receives UDP datagrams and parses them; the newest frame
// of the chosen stream is handed to the main thread, which poses the avatar in
// LateUpdate (after the Animator, so the pose wins over any animation).
//
// Space: the stream's directions are in TED axes (x = subject's right, y = down,
// z = forward, right-handed). Unity is left-handed, Y up, Z forward, so a
// direction (x, y, z) becomes (x, -y, z) in the avatar's space; that single axis
// flip is also the handedness change. Rotations are built in Unity space, so no
// quaternion conversion is needed.

using System;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using UnityEngine;

namespace HopLive
{
    public class HopOscReceiver : MonoBehaviour
    {
        [Tooltip("UDP port given to hop-live --osc HOST:PORT")]
        public int port = 9000;
        [Tooltip("Speaker / channel to follow (/hop/stream)")]
        public int stream = 0;
        [Tooltip("Humanoid avatar to pose; defaults to the Animator on this GameObject. Must be in T-pose when enabled.")]
        public Animator animator;
        [Range(0f, 0.95f), Tooltip("0 = follow each frame exactly; higher = smoother and later")]
        public float smoothing = 0f;

        // Read-only figures for the inspector or your own scripts.
        public HopFrame LatestFrame { get; private set; }
        public int FramesReceived { get { return framesReceived; } }
        public int PacketsRejected { get { return packetsRejected; } }
        public string LastError { get { return lastError; } }
        public float Speaking { get; private set; }

        // One drive: avatar bone `Bone` is swung so that its rest direction follows source bone `Source` of the
        // stream. The rest direction points at bone `To`, or is the fixed avatar-space vector `Fixed`.
        struct Drive
        {
            public HumanBodyBones Bone, To;
            public int Source, Parent;  // Parent: index of the nearest driven ancestor in the table, -1 for none
            public Vector3 Fixed;
            public Drive(HumanBodyBones bone, int source, int parent, HumanBodyBones to, Vector3 fixedDirection)
            {
                Bone = bone; Source = source; Parent = parent; To = to; Fixed = fixedDirection;
            }
        }

        const HumanBodyBones NoBone = HumanBodyBones.LastBone;

        // Parents before children. Neck and head directions (neck->nose, nose->head top / eye) do not run along
        // a bone, so their rest directions are fixed vectors, the same as profiles/rigs/unity_humanoid.toml.
        static Drive[] Table(int spine, int nose, int head, int lShoulder, int lUpper, int lLower, int rShoulder,
                             int rUpper, int rLower, Vector3 headRest)
        {
            return new[]
            {
                new Drive(HumanBodyBones.Spine, spine, -1, HumanBodyBones.Neck, Vector3.zero),
                new Drive(HumanBodyBones.Neck, nose, 0, NoBone, new Vector3(0f, 0.14f, 0.07f)),
                new Drive(HumanBodyBones.Head, head, 1, NoBone, headRest),
                new Drive(HumanBodyBones.LeftShoulder, lShoulder, 0, HumanBodyBones.LeftUpperArm, Vector3.zero),
                new Drive(HumanBodyBones.LeftUpperArm, lUpper, 3, HumanBodyBones.LeftLowerArm, Vector3.zero),
                new Drive(HumanBodyBones.LeftLowerArm, lLower, 4, HumanBodyBones.LeftHand, Vector3.zero),
                new Drive(HumanBodyBones.RightShoulder, rShoulder, 0, HumanBodyBones.RightUpperArm, Vector3.zero),
                new Drive(HumanBodyBones.RightUpperArm, rUpper, 6, HumanBodyBones.RightLowerArm, Vector3.zero),
                new Drive(HumanBodyBones.RightLowerArm, rLower, 7, HumanBodyBones.RightHand, Vector3.zero),
            };
        }

        // Bone order of the two skeletons (hop.model.skeleton): index of each source bone in /hop/dirvec.
        static readonly Drive[] TedGesture = Table(0, 1, 2, 3, 4, 5, 6, 7, 8, new Vector3(0f, 0.12f, -0.056f));
        static readonly Drive[] TedExpressive = Table(0, 7, 8, 1, 3, 4, 2, 5, 6, new Vector3(-0.032f, 0.04f, -0.02f));

        Transform[] bones;
        Quaternion[] restRotation;  // bone rotation relative to the avatar root, at rest (T-pose)
        Vector3[] restDirection;    // per drive, in avatar-root space
        Quaternion[] delta;         // per drive, this frame's rotation from rest, avatar-root space

        UdpClient client;
        Thread thread;
        volatile bool running;
        readonly object gate = new object();
        HopFrame pending;
        int framesReceived, packetsRejected;
        string lastError = "";

        void OnEnable()
        {
            if (animator == null) animator = GetComponent<Animator>();
            if (animator == null || !animator.isHuman)
            {
                Debug.LogError("HopOscReceiver needs a Humanoid Animator", this);
                enabled = false;
                return;
            }
            CaptureRest();
            client = new UdpClient(port);
            running = true;
            thread = new Thread(ReceiveLoop) { IsBackground = true, Name = "hop-live OSC" };
            thread.Start();
        }

        void OnDisable()
        {
            running = false;
            if (client != null) client.Close();  // unblocks Receive
            if (thread != null) thread.Join(200);
            client = null;
            thread = null;
        }

        void CaptureRest()
        {
            // Same drive bones in both tables, so one capture serves both skeletons.
            var root = animator.transform;
            bones = new Transform[TedGesture.Length];
            restRotation = new Quaternion[TedGesture.Length];
            restDirection = new Vector3[TedGesture.Length];
            delta = new Quaternion[TedGesture.Length];
            for (int i = 0; i < TedGesture.Length; i++)
            {
                var d = TedGesture[i];
                bones[i] = animator.GetBoneTransform(d.Bone);
                delta[i] = Quaternion.identity;
                if (bones[i] == null) continue;  // optional bones (e.g. shoulders) may be missing
                restRotation[i] = Quaternion.Inverse(root.rotation) * bones[i].rotation;
                var to = d.To == NoBone ? null : animator.GetBoneTransform(d.To);
                restDirection[i] = to != null
                    ? root.InverseTransformDirection(to.position - bones[i].position).normalized
                    : d.Fixed.normalized;
            }
        }

        void ReceiveLoop()
        {
            var from = new IPEndPoint(IPAddress.Any, 0);
            while (running)
            {
                byte[] data;
                try { data = client.Receive(ref from); }
                catch (SocketException) { continue; }     // e.g. ICMP port unreachable on Windows; keep going
                catch (ObjectDisposedException) { break; } // closed by OnDisable
                string error;
                var frame = HopOscParser.Parse(data, data.Length, out error);
                if (frame == null)
                {
                    Interlocked.Increment(ref packetsRejected);
                    lastError = error;
                    continue;
                }
                if (frame.Stream != stream) continue;
                Interlocked.Increment(ref framesReceived);
                lock (gate) pending = frame;  // only the newest frame matters
            }
        }

        void LateUpdate()
        {
            HopFrame frame;
            lock (gate) { frame = pending; pending = null; }
            if (frame != null) LatestFrame = frame;
            if (LatestFrame == null) return;
            Drive[] table = LatestFrame.Skeleton == "ted_expressive" ? TedExpressive
                : LatestFrame.Skeleton == "ted_gesture" ? TedGesture : null;
            if (table == null || LatestFrame.DirVec.Length < 3 * (Max(table) + 1)) return;
            Speaking = LatestFrame.Speaking ? 1f : 0f;

            var root = animator.transform;
            float follow = 1f - smoothing;
            for (int i = 0; i < table.Length; i++)
            {
                var d = table[i];
                Quaternion parent = d.Parent >= 0 ? delta[d.Parent] : Quaternion.identity;
                if (bones[i] == null) { delta[i] = parent; continue; }
                var v = LatestFrame.DirVec;
                var target = new Vector3(v[3 * d.Source], -v[3 * d.Source + 1], v[3 * d.Source + 2]);  // TED -> Unity
                Quaternion wanted = parent;
                if (target.sqrMagnitude > 1e-8f)
                    wanted = Quaternion.FromToRotation(parent * restDirection[i], target.normalized) * parent;
                delta[i] = Quaternion.Slerp(delta[i], wanted, follow);
                bones[i].rotation = root.rotation * delta[i] * restRotation[i];
            }
        }

        static int Max(Drive[] table)
        {
            int max = 0;
            foreach (var d in table) max = Math.Max(max, d.Source);
            return max;
        }
    }
}
