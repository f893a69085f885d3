"""What camera signatures cost per frame (`inspection.signing`): the pixel digest (SHA-256, and
BLAKE2b-128 for comparison), the camera's encode with and without signing, the worker's decode with
and without the digest check, and the recorder's check of one frame result. CPU time of this
process, the fastest and the median of `--trials` runs of `--repeat` calls each."""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from inspection.arguments import positive_int

HELP = "camera signatures: digest, sign, decode check and recorder verify, per frame (CPU ms)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=positive_int, default=1600, help="frame width in pixels")
    parser.add_argument("--height", type=positive_int, default=1024, help="frame height in lines")
    parser.add_argument("--repeat", type=positive_int, default=50, help="calls per trial")
    parser.add_argument("--trials", type=positive_int, default=5, help="trials (fastest and median reported)")


def _ms(fn: Callable[[], Any], repeat: int, trials: int) -> dict[str, float]:
    runs = []
    for _ in range(trials):
        t0 = time.process_time()
        for _ in range(repeat):
            fn()
        runs.append((time.process_time() - t0) / repeat * 1000)
    return {"min": round(min(runs), 4), "median": round(statistics.median(runs), 4)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from inspection import wire
    from inspection.frame import Capture, Frame, StreamKey
    from inspection.records.seals import SealCheck
    from inspection.results import FrameResult
    from inspection.signing import Signer

    pixels = np.random.default_rng(0).integers(0, 255, (args.height, args.width), dtype=np.uint8)
    view = memoryview(pixels).cast("B")
    key = Ed25519PrivateKey.generate()
    signer = Signer(key, "top-1")
    source = StreamKey("bench-1", "hot", "top-1", "top")
    frame = Frame(source, "C-1", 5, 4, 123, 4096.0, 0.0, 1.0, 1.0, pixels)
    plain = [bytes(p) for p in wire.encode(frame)]
    sealed = [bytes(p) for p in wire.encode(frame, signer)]
    back = wire.decode(sealed)
    result = FrameResult(source, "C-1", 5, 4, 123, 4096.0, back.length_mm, "m-1", "0" * 64, 1, (), Capture.of(back))
    check = SealCheck({"top-1": key.public_key()})
    r, t = args.repeat, args.trials
    return {
        "frame": {"width": args.width, "height": args.height, "dtype": "uint8", "bytes": pixels.nbytes},
        "digest_sha256_ms": _ms(lambda: hashlib.sha256(view).digest(), r, t),
        "digest_blake2b_128_ms": _ms(lambda: hashlib.blake2b(view, digest_size=16).digest(), r, t),
        "camera_encode_ms": _ms(lambda: wire.encode(frame), r * 10, t),
        "camera_encode_signed_ms": _ms(lambda: wire.encode(frame, signer), r, t),
        "worker_decode_ms": _ms(lambda: wire.decode(plain), r * 10, t),
        "worker_decode_signed_ms": _ms(lambda: wire.decode(sealed), r, t),
        "recorder_verify_ms": _ms(lambda: check.refuse(result), r * 10, t),
        "note": "CPU time of one process per call; signed encode = SHA-256 of the pixels + Ed25519 sign; signed "
                "decode adds the digest check; recorder verify = one Ed25519 verify per frame message, whatever "
                "its number of defects",
    }
