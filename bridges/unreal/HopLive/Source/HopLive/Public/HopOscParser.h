// Parser for hop-live's native OSC stream (the /hop/... address space; see bridges/README.md).
//
// Standard C++17 only (no Unreal types), header-only, so the same file compiles
// outside the engine: tests/bridges/test_bridges_vectors.py builds it with g++ and
// runs it against bridges/test_vectors/native_osc.json. Inside Unreal it is used
// by UHopOscReceiverComponent.
//
// One UDP datagram = one OSC bundle = one frame. A packet is accepted only if it
// is a well-formed bundle holding all seven /hop/ messages with the expected type
// tags; unknown addresses are skipped; anything else is rejected with a reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace HopOsc
{
constexpr const char* AddressFrame = "/hop/frame";        // i
constexpr const char* AddressStream = "/hop/stream";      // i
constexpr const char* AddressTime = "/hop/time";          // d
constexpr const char* AddressSpeaking = "/hop/speaking";  // i
constexpr const char* AddressSkeleton = "/hop/skeleton";  // s
constexpr const char* AddressDirVec = "/hop/dirvec";      // f*(3B)  unit bone directions, TED axes
constexpr const char* AddressJoints = "/hop/joints";      // f*(3B+3) joint positions, metres, TED axes

struct FFrame
{
	int32_t Frame = 0;
	int32_t Stream = 0;
	double Time = 0.0;  // sender's perf_counter() of the newest audio sample used
	bool bSpeaking = false;
	std::string Skeleton;  // "ted_gesture" (9 bones) or "ted_expressive" (42)
	std::vector<float> DirVec;
	std::vector<float> Joints;
};

namespace Detail
{
struct FReader
{
	const uint8_t* Data;
	size_t Pos;
	size_t End;
	const char* Error = nullptr;

	bool Need(size_t Size)
	{
		if (Error == nullptr && Pos + Size > End) Error = "argument runs past the element";
		return Error == nullptr;
	}
	uint32_t U32()
	{
		if (!Need(4)) return 0;
		const uint8_t* P = Data + Pos;
		Pos += 4;
		return (uint32_t(P[0]) << 24) | (uint32_t(P[1]) << 16) | (uint32_t(P[2]) << 8) | uint32_t(P[3]);
	}
	int32_t I32() { return int32_t(U32()); }
	float F32()
	{
		uint32_t Bits = U32();
		float Value;
		std::memcpy(&Value, &Bits, 4);
		return Value;
	}
	double F64()
	{
		uint64_t High = U32();
		uint64_t Bits = (High << 32) | U32();
		double Value;
		std::memcpy(&Value, &Bits, 8);
		return Value;
	}
	// NUL-terminated, NUL-padded to a multiple of 4.
	std::string Str()
	{
		if (Error != nullptr) return {};
		const void* Nul = std::memchr(Data + Pos, 0, End - Pos);
		if (Nul == nullptr) { Error = "unterminated string"; return {}; }
		size_t Length = static_cast<const uint8_t*>(Nul) - (Data + Pos);
		size_t Next = Pos + ((Length + 4) & ~size_t(3));
		if (Next > End) { Error = "string padding runs past the element"; return {}; }
		for (size_t I = Pos + Length; I < Next; ++I)
			if (Data[I] != 0) { Error = "string is not NUL-padded"; return {}; }
		std::string Value(reinterpret_cast<const char*>(Data + Pos), Length);
		Pos = Next;
		return Value;
	}
};

inline bool Fail(const char** OutError, const char* Message)
{
	if (OutError != nullptr) *OutError = Message;
	return false;
}

inline void ReadFloats(FReader& R, const std::string& Tags, std::vector<float>& Out)
{
	if (Tags.find_first_not_of('f', 1) != std::string::npos) { R.Error = "float array with non-float type tags"; return; }
	Out.resize(Tags.size() - 1);
	if (!R.Need(4 * Out.size())) return;
	for (float& Value : Out) Value = R.F32();
}

inline void SkipArguments(FReader& R, const std::string& Tags)
{
	for (size_t I = 1; I < Tags.size() && R.Error == nullptr; ++I)
	{
		switch (Tags[I])
		{
		case 'i': case 'f': case 'c': case 'r': case 'm': R.U32(); break;
		case 'd': case 'h': case 't': R.U32(); R.U32(); break;
		case 's': case 'S': R.Str(); break;
		case 'b':
		{
			int32_t Size = R.I32();
			if (Size < 0) { R.Error = "negative blob size"; break; }
			if (R.Need(size_t(Size))) R.Pos += (size_t(Size) + 3) & ~size_t(3);
			break;
		}
		case 'T': case 'F': case 'N': case 'I': break;
		default: R.Error = "unknown type tag";
		}
	}
}

// One message in Data[Begin, End); returns the bit of the known address it carried (0 if unknown), -1 on error.
inline int ParseMessage(const uint8_t* Data, size_t Begin, size_t End, FFrame& Out, const char** OutError)
{
	FReader R{Data, Begin, End};
	const std::string Address = R.Str();
	const std::string Tags = R.Str();
	if (R.Error != nullptr) return Fail(OutError, R.Error), -1;
	if (Address.empty() || Address[0] != '/') return Fail(OutError, "address does not start with '/'"), -1;
	if (Tags.empty() || Tags[0] != ',') return Fail(OutError, "type tags do not start with ','"), -1;
	int Seen = 0;
	auto Expect = [&](const char* Want) {
		if (Tags != Want && R.Error == nullptr) R.Error = "unexpected type tags for a /hop/ address";
		return R.Error == nullptr;
	};
	if (Address == AddressFrame) { if (Expect(",i")) Out.Frame = R.I32(); Seen = 1; }
	else if (Address == AddressStream) { if (Expect(",i")) Out.Stream = R.I32(); Seen = 2; }
	else if (Address == AddressTime) { if (Expect(",d")) Out.Time = R.F64(); Seen = 4; }
	else if (Address == AddressSpeaking) { if (Expect(",i")) Out.bSpeaking = R.I32() != 0; Seen = 8; }
	else if (Address == AddressSkeleton) { if (Expect(",s")) Out.Skeleton = R.Str(); Seen = 16; }
	else if (Address == AddressDirVec) { ReadFloats(R, Tags, Out.DirVec); Seen = 32; }
	else if (Address == AddressJoints) { ReadFloats(R, Tags, Out.Joints); Seen = 64; }
	else SkipArguments(R, Tags);
	if (R.Error == nullptr && R.Pos != End) R.Error = "bytes left after the arguments";
	if (R.Error != nullptr) return Fail(OutError, R.Error), -1;
	return Seen;
}
}  // namespace Detail

// Parses one datagram into Out. On failure returns false, sets *OutError, and Out may be partly written:
// parse into a scratch frame and copy on success.
inline bool ParseBundle(const uint8_t* Data, size_t Size, FFrame& Out, const char** OutError = nullptr)
{
	if (Size < 16 || Size % 4 != 0 || std::memcmp(Data, "#bundle\0", 8) != 0)
		return Detail::Fail(OutError, "not an OSC bundle");
	int Seen = 0;
	for (size_t Pos = 16; Pos < Size;)
	{
		if (Pos + 4 > Size) return Detail::Fail(OutError, "truncated bundle element size");
		const int32_t ElementSize = int32_t((uint32_t(Data[Pos]) << 24) | (uint32_t(Data[Pos + 1]) << 16) |
		                                    (uint32_t(Data[Pos + 2]) << 8) | uint32_t(Data[Pos + 3]));
		if (ElementSize <= 0 || ElementSize % 4 != 0 || Pos + 4 + size_t(ElementSize) > Size)
			return Detail::Fail(OutError, "bad bundle element size");
		if (Data[Pos + 4] != '#')  // nested bundles are not part of the stream: skipped
		{
			const int Bit = Detail::ParseMessage(Data, Pos + 4, Pos + 4 + size_t(ElementSize), Out, OutError);
			if (Bit < 0) return false;
			Seen |= Bit;
		}
		Pos += 4 + size_t(ElementSize);
	}
	if (Seen != 127) return Detail::Fail(OutError, "incomplete frame: some /hop/ messages are missing");
	if (Out.DirVec.empty() || Out.DirVec.size() % 3 != 0 || Out.Joints.size() != Out.DirVec.size() + 3)
		return Detail::Fail(OutError, "/hop/dirvec and /hop/joints sizes do not match (3B and 3B+3 floats)");
	return true;
}
}  // namespace HopOsc
