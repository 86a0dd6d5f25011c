"""Speaks phrases with libespeak-ng in a fresh process and reports its WORD events.

libespeak-ng keeps state between utterances (some voices' pitch flutter, the voice
last loaded), so the same text can come out a few samples different depending on
what was spoken before. Running every request in a fresh process makes the output
a function of the request alone. Standard library only, so it starts in ~20 ms.

stdin: one JSON object {"voice": str, "rate": int, "pitch": int, "texts": [str, ...]}.
stdout: one JSON line {"sample_rate": int, "phrases": [{"n_samples": int,
"words": [[char_pos_1based, char_len, sample], ...]}, ...]} or {"error": str},
then the phrases' int16 little-endian samples back to back.
"""

import ctypes
import ctypes.util
import json
import sys

EV_LIST_TERMINATED, EV_WORD = 0, 1
AUDIO_OUTPUT_SYNCHRONOUS, POS_CHARACTER, CHARS_UTF8 = 2, 1, 1
PARAM_RATE, PARAM_PITCH = 1, 3


class Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))


def fail(message):
    sys.stdout.write(json.dumps({"error": message}) + "\n")
    sys.stdout.flush()
    sys.exit(0)


def main():
    request = json.loads(sys.stdin.read())
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
    except OSError as exc:
        fail(f"libespeak-ng not found ({exc}); install Debian's espeak-ng")
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0)
    if rate <= 0:
        fail(f"espeak_Initialize failed ({rate})")
    if lib.espeak_SetVoiceByName(request["voice"].encode()) != 0:
        fail(f"espeak-ng has no voice {request['voice']!r}")
    lib.espeak_SetParameter(PARAM_RATE, int(request["rate"]), 0)
    lib.espeak_SetParameter(PARAM_PITCH, int(request["pitch"]), 0)

    chunks, words = [], []

    def on_synth(wav, n, events):
        if n > 0 and wav:
            chunks.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while events[i].type != EV_LIST_TERMINATED:
            if events[i].type == EV_WORD:
                words.append([events[i].text_position, events[i].length, events[i].sample])
            i += 1
        return 0

    callback = CALLBACK(on_synth)
    lib.espeak_SetSynthCallback(callback)
    phrases, pcm = [], []
    for text in request["texts"]:
        chunks.clear()
        words.clear()
        data = text.encode("utf-8")
        lib.espeak_Synth(ctypes.create_string_buffer(data), len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8,
                         None, None)
        lib.espeak_Synchronize()
        audio = b"".join(chunks)
        phrases.append({"n_samples": len(audio) // 2, "words": list(words)})
        pcm.append(audio)
    sys.stdout.write(json.dumps({"sample_rate": rate, "phrases": phrases}) + "\n")
    sys.stdout.flush()
    for audio in pcm:
        sys.stdout.buffer.write(audio)
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
