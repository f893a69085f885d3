"""Synthetic worker messages for tests, benchmarks and console development (deterministic by seed).

`coil_messages` produces exactly what workers send for one coil: coil_start per camera, a
`FrameResult` per frame (some with defects, optionally with PNG crops) and coil_end per camera
with the camera's frame and drop counts. Nothing here is used by the production path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Mapping, Sequence

import numpy as np

from inspection.frame import Capture, CoilEvent, StreamKey
from inspection.results import Defect, FrameDropped, FrameResult, ResultMessage
from inspection.severity import severity
from inspection.signing import UNSIGNED, Signer, pixel_digest

HOT_CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
COLD_CLASSES = ("inclusions", "dents", "oil spots", "pits", "punching", "linear", "macular")
TEST_MODEL = ("hot-test-1", hashlib.sha256(b"hot-test-1").hexdigest())
DEFAULT_CAMERAS = (("top-1", "top"), ("bottom-1", "bottom"))


def crop_png(rng: np.random.Generator, height: int = 48, width: int = 48) -> bytes:
    """A small grey PNG with a dark blob, roughly what a defect crop with margin looks like."""
    import cv2

    img = rng.normal(128, 12, (height, width)).clip(0, 255).astype(np.uint8)
    cy, cx = height // 2, width // 2
    cv2.ellipse(img, (cx, cy), (max(width // 5, 2), max(height // 7, 2)), float(rng.uniform(0, 180)), 0, 360,
                int(rng.integers(30, 90)), -1)
    ok, buf = cv2.imencode(".png", img)
    return buf.tobytes()


def coil_messages(coil: str, *, line: str = "demo-hot-1", line_type: str = "hot",
                  cameras: Sequence[tuple[str, str]] = DEFAULT_CAMERAS, length_m: float = 120.0,
                  width_mm: float = 1600.0, frame_mm: float = 1024.0, defects_per_frame: float = 0.4,
                  classes: Sequence[str] = HOT_CLASSES, seed: int = 0, model: tuple[str, str] = TEST_MODEL,
                  crops: bool = False, start_ns: int = 1_763_900_000 * 10**9, skip_frames: Sequence[int] = (),
                  camera_dropped: int = 0) -> list[ResultMessage]:
    """All messages of one coil, per camera in stream order (start, frames, end).

    `skip_frames` are frame indices the workers never report (lost); `camera_dropped` is the count the
    camera reports as not sent (those frame indices are also not reported).
    """
    rng = random.Random(f"{coil}:{seed}")
    nrng = np.random.default_rng(rng.randrange(2**32))
    n_frames = max(1, int(length_m * 1000 // frame_mm))
    out: list[ResultMessage] = []
    for cam, surface in cameras:
        src = StreamKey(line=line, line_type=line_type, camera=cam, surface=surface)
        seq = 0
        out.append(CoilEvent("coil_start", src, coil, seq, start_ns))
        lost = set(skip_frames) | set(range(n_frames - camera_dropped, n_frames))
        for index in range(n_frames):
            seq += 1
            if index in lost:
                continue
            t = start_ns + index * 50_000_000
            defects = []
            for _ in range(_poisson(rng, defects_per_frame)):
                cls = rng.choice(classes)
                length, width = rng.uniform(3, 120), rng.uniform(2, 60)
                score = rng.uniform(0.3, 0.99)
                y = rng.uniform(0, frame_mm - length)
                x = rng.uniform(0, width_mm - width)
                sev = severity(cls, length, width, length * width, score)
                defects.append(Defect(
                    cls=cls, score=score, severity=sev, box=(x, y, x + width, y + length),
                    along_mm=index * frame_mm + y + length / 2, across_mm=x + width / 2, length_mm=length,
                    width_mm=width, area_mm2=length * width * 0.7,
                    crop_png=crop_png(nrng) if crops else None))
            out.append(FrameResult(src, coil, seq, index, t, index * frame_mm, frame_mm, model[0], model[1],
                                   t + 5_000_000, tuple(defects)))
        out.append(CoilEvent("coil_end", src, coil, seq + 1, start_ns + n_frames * 50_000_000,
                             length_mm=n_frames * frame_mm, frames=n_frames, dropped=camera_dropped))
    return out


def signed(messages: Sequence[ResultMessage], signers: Mapping[str, Signer]) -> list[ResultMessage]:
    """`messages` as a signing line's workers send them: each frame result, drop and coil event with
    the signature of its camera's `signers` entry (a frame of 1024 rows whose pixels are stood in for
    by a digest of its name); messages of cameras without a signer stay unsigned."""
    out: list[ResultMessage] = []
    for m in messages:
        signer = signers.get(getattr(getattr(m, "source", None), "camera", ""))
        if signer is None:
            out.append(m)
        elif isinstance(m, CoilEvent):
            out.append(dataclasses.replace(m, sig=signer.event(m)))  # the event's bytes leave its sig out
        elif isinstance(m, FrameResult | FrameDropped):
            position = m.position_mm if isinstance(m, FrameResult) else m.index * 1024.0
            per_px = m.length_mm / 1024 if isinstance(m, FrameResult) else 1.0
            digest = pixel_digest(f"{m.source.camera}:{m.coil}:{m.index}".encode())
            capture = signer.seal(m.source, m.coil, m.seq, m.index, m.captured_ns,
                                  Capture(position, 0.0, 1.0, per_px, "uint8", 1024, 1600, digest, UNSIGNED))
            if isinstance(m, FrameResult):  # the length the camera's rows and pixel size give
                out.append(dataclasses.replace(m, capture=capture, length_mm=capture.length_mm))
            else:
                out.append(dataclasses.replace(m, capture=capture))
        else:
            out.append(m)
    return out


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method: small lambdas only, which is all a frame ever has.
    limit, k, p = pow(2.718281828459045, -lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
