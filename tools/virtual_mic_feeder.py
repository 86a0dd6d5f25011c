"""Writes PCM into the virtual microphone's FIFO at real-time pace (run as a child process).

A separate process, so a test that starves its own interpreter (to provoke input
overflows) does not starve the microphone too. Protocol: on stdin, clips of
little-endian int16 samples, each preceded by its byte length (uint32 LE); on
stdout, `start <perf_counter>` when a clip begins and `end <perf_counter>` when it
has been written. Between clips it writes silence, as a real microphone does.
EOF is the signal to exit.
"""

import collections
import os
import struct
import sys
import threading
import time

SAMPLE_RATE = 16_000
CHUNK_BYTES = 320  # 10 ms of 16-bit mono


def read_clips(queue: collections.deque, done: threading.Event) -> None:
    stdin = sys.stdin.buffer
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            break
        (size,) = struct.unpack("<I", header)
        queue.append(stdin.read(size))
    done.set()


def main(fifo: str) -> None:
    queue: collections.deque[bytes] = collections.deque()
    done = threading.Event()
    threading.Thread(target=read_clips, args=(queue, done), daemon=True).start()
    silence = bytes(CHUNK_BYTES)
    current, offset = None, 0
    while not done.is_set():
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # unplugged: no FIFO, or nobody reading it
            time.sleep(0.05)
            continue
        os.set_blocking(fd, True)
        next_due = time.perf_counter()
        try:
            while not done.is_set():
                if current is None and queue:
                    current, offset = queue.popleft(), 0
                    print(f"start {time.perf_counter()}", flush=True)
                if current is not None:
                    chunk = current[offset : offset + CHUNK_BYTES]
                    offset += len(chunk)
                else:
                    chunk = silence
                os.write(fd, chunk)
                if current is not None and offset >= len(current):
                    current = None
                    print(f"end {time.perf_counter()}", flush=True)
                next_due += len(chunk) / 2 / SAMPLE_RATE
                time.sleep(max(0.0, next_due - time.perf_counter()))
        except OSError:  # BrokenPipeError: the source was unloaded mid-write
            pass
        finally:
            os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1])
