// Parser for hop-live's native OSC stream (the /hop/... address space; see bridges/README.md).
//
// Plain C#, no UnityEngine and no third-party OSC package, so the same file also
// compiles outside Unity: tests/bridges/test_bridges_vectors.py builds it with
// Mono's mcs (when installed) and runs it against bridges/test_vectors/native_osc.json.
//
// One UDP datagram = one OSC bundle = one frame. A packet is accepted only if it
// is a well-formed bundle holding all seven /hop/ messages with the expected type
// tags; unknown addresses are skipped (forward compatible); anything else is
// rejected with a reason and the caller keeps its previous frame.

using System;
using System.Runtime.InteropServices;
using System.Text;

namespace HopLive
{
    public sealed class HopFrame
    {
        public int Frame;          // /hop/frame    i
        public int Stream;         // /hop/stream   i
        public double Time;        // /hop/time     d  sender's perf_counter() of the newest audio sample used
        public bool Speaking;      // /hop/speaking i
        public string Skeleton;    // /hop/skeleton s  "ted_gesture" (9 bones) or "ted_expressive" (42)
        public float[] DirVec;     // /hop/dirvec   f*(3B) unit bone directions, TED axes (x right, y down, z forward)
        public float[] Joints;     // /hop/joints   f*(3B+3) joint positions, metres, TED axes, root at 0
    }

    public static class HopOscParser
    {
        public const string AddressFrame = "/hop/frame";
        public const string AddressStream = "/hop/stream";
        public const string AddressTime = "/hop/time";
        public const string AddressSpeaking = "/hop/speaking";
        public const string AddressSkeleton = "/hop/skeleton";
        public const string AddressDirVec = "/hop/dirvec";
        public const string AddressJoints = "/hop/joints";

        [StructLayout(LayoutKind.Explicit)]
        struct Bits32 { [FieldOffset(0)] public int I; [FieldOffset(0)] public float F; }

        public static float IntBitsToFloat(int bits) { Bits32 b = default(Bits32); b.I = bits; return b.F; }
        public static int FloatToIntBits(float value) { Bits32 b = default(Bits32); b.F = value; return b.I; }

        static int ReadInt32(byte[] d, int p)
        {
            return (d[p] << 24) | (d[p + 1] << 16) | (d[p + 2] << 8) | d[p + 3];
        }

        static long ReadInt64(byte[] d, int p)
        {
            return ((long)(uint)ReadInt32(d, p) << 32) | (uint)ReadInt32(d, p + 4);
        }

        // A NUL-terminated ASCII string padded with NULs to a multiple of 4; returns the position after it.
        static int ReadString(byte[] d, int p, int end, out string value)
        {
            int nul = Array.IndexOf(d, (byte)0, p, end - p);
            if (nul < 0) throw new FormatException("unterminated string at byte " + p);
            int next = p + ((nul - p + 4) & ~3);
            if (next > end) throw new FormatException("string padding runs past the element at byte " + p);
            for (int i = nul; i < next; i++)
                if (d[i] != 0) throw new FormatException("string at byte " + p + " is not NUL-padded");
            value = Encoding.ASCII.GetString(d, p, nul - p);
            return next;
        }

        static void Need(int p, int size, int end)
        {
            if (p + size > end) throw new FormatException("argument at byte " + p + " runs past the element");
        }

        static float[] ReadFloats(byte[] d, ref int p, string tags, int end, string address)
        {
            for (int i = 1; i < tags.Length; i++)
                if (tags[i] != 'f') throw new FormatException(address + " must hold only floats, has ," + tags.Substring(1));
            var values = new float[tags.Length - 1];
            Need(p, 4 * values.Length, end);
            for (int i = 0; i < values.Length; i++, p += 4) values[i] = IntBitsToFloat(ReadInt32(d, p));
            return values;
        }

        static void Expect(string tags, string want, string address)
        {
            if (tags != want) throw new FormatException(address + " needs type tags " + want + ", has " + tags);
        }

        // Skips the arguments of a message we do not know.
        static int SkipArguments(byte[] d, int p, string tags, int end)
        {
            for (int i = 1; i < tags.Length; i++)
            {
                switch (tags[i])
                {
                    case 'i': case 'f': case 'c': case 'r': case 'm': Need(p, 4, end); p += 4; break;
                    case 'd': case 'h': case 't': Need(p, 8, end); p += 8; break;
                    case 's': case 'S': { string ignored; p = ReadString(d, p, end, out ignored); break; }
                    case 'b':
                    {
                        Need(p, 4, end);
                        int size = ReadInt32(d, p);
                        if (size < 0) throw new FormatException("negative blob size");
                        Need(p + 4, size, end);
                        p += 4 + ((size + 3) & ~3);
                        break;
                    }
                    case 'T': case 'F': case 'N': case 'I': break;
                    default: throw new FormatException("unknown type tag '" + tags[i] + "'");
                }
            }
            return p;
        }

        const int SeenAll = (1 << 7) - 1;

        // Parses one message in d[p, end) into frame; returns a bit for each known address seen.
        static int ParseMessage(byte[] d, int p, int end, HopFrame frame)
        {
            string address, tags;
            p = ReadString(d, p, end, out address);
            if (address.Length == 0 || address[0] != '/') throw new FormatException("address does not start with '/'");
            p = ReadString(d, p, end, out tags);
            if (tags.Length == 0 || tags[0] != ',') throw new FormatException("type tags of " + address + " do not start with ','");
            int seen;
            switch (address)
            {
                case AddressFrame: Expect(tags, ",i", address); Need(p, 4, end); frame.Frame = ReadInt32(d, p); p += 4; seen = 1; break;
                case AddressStream: Expect(tags, ",i", address); Need(p, 4, end); frame.Stream = ReadInt32(d, p); p += 4; seen = 2; break;
                case AddressTime:
                    Expect(tags, ",d", address); Need(p, 8, end);
                    frame.Time = BitConverter.Int64BitsToDouble(ReadInt64(d, p)); p += 8; seen = 4; break;
                case AddressSpeaking: Expect(tags, ",i", address); Need(p, 4, end); frame.Speaking = ReadInt32(d, p) != 0; p += 4; seen = 8; break;
                case AddressSkeleton: Expect(tags, ",s", address); p = ReadString(d, p, end, out frame.Skeleton); seen = 16; break;
                case AddressDirVec: frame.DirVec = ReadFloats(d, ref p, tags, end, address); seen = 32; break;
                case AddressJoints: frame.Joints = ReadFloats(d, ref p, tags, end, address); seen = 64; break;
                default: p = SkipArguments(d, p, tags, end); seen = 0; break;
            }
            if (p != end) throw new FormatException((end - p) + " bytes left after the arguments of " + address);
            return seen;
        }

        // Parses one datagram. Returns the frame, or null with error set.
        public static HopFrame Parse(byte[] data, int length, out string error)
        {
            error = null;
            try
            {
                if (length < 16 || length > data.Length || length % 4 != 0)
                    throw new FormatException("packet size " + length + " is not a bundle");
                for (int i = 0; i < 8; i++)
                    if (data[i] != (byte)"#bundle\0"[i]) throw new FormatException("not an OSC bundle");
                var frame = new HopFrame();
                int seen = 0;
                for (int p = 16; p < length;)
                {
                    Need(p, 4, length);
                    int size = ReadInt32(data, p);
                    if (size <= 0 || size % 4 != 0 || p + 4 + size > length)
                        throw new FormatException("bad bundle element size " + size + " at byte " + p);
                    if (data[p + 4] != (byte)'#')  // nested bundles are not part of the stream: skipped
                        seen |= ParseMessage(data, p + 4, p + 4 + size, frame);
                    p += 4 + size;
                }
                if (seen != SeenAll) throw new FormatException("incomplete frame: some /hop/ messages are missing");
                if (frame.DirVec.Length == 0 || frame.DirVec.Length % 3 != 0 || frame.Joints.Length != frame.DirVec.Length + 3)
                    throw new FormatException("/hop/dirvec and /hop/joints sizes do not match (3B and 3B+3 floats)");
                return frame;
            }
            catch (FormatException e)
            {
                error = e.Message;
                return null;
            }
        }
    }
}
