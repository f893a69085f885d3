"""Basler cameras through the vendor SDK, `pypylon` (the ``genicam`` extra).

Line-scan use: ``Height`` is set to the frame height in lines and ``Width`` to the camera's
pixel count across; when the camera has ``AcquisitionLineRate`` (Basler racer / raL) and the
stream is paced, the line rate is set to line speed / mm per line. Position along the strip
comes from the line count (encoder-triggered lines, the default) or from the line speed and
capture time (``position_source = "speed"``), see `cameras.base`.

Failed or incomplete grab results (and images the camera skipped because the host was too
slow, ``GetNumberOfSkippedImages``) are counted as dropped frames of the coil and logged,
never passed on.

The SDK's camera emulator works with no hardware: set ``PYLON_CAMEMU=1`` in the environment
*before* pypylon is first imported in the process, and give ``image_folder``: the source sets
``ImageFilename`` to it, ``ImageFileMode = On`` and ``TestImageSelector = Off``, so the
emulated camera streams those files (cycling through them) through the real SDK.

Camera options (``[cameras.options]`` in the line config): ``serial`` (pick one camera),
``image_folder`` (emulator), ``grab_timeout_ms`` (default 5000), ``buffers`` (default 16),
``emulator_failed_buffers`` (diagnostics: after the first good frame the emulator fails that
many buffers, through its ``ForceFailedBuffer`` command, to exercise the counting).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cameras.base import CameraSource, Grab, StripGeometry
from inspection.errors import SourceError
from inspection.frame import StreamKey

log = logging.getLogger(__name__)


def _import_pylon() -> tuple[Any, Any]:
    try:
        from pypylon import genicam, pylon
    except ImportError as exc:
        raise SourceError(f"pylon source needs pypylon: pip install 'steel-inspect[genicam]' ({exc})") from None
    return pylon, genicam


class PylonSource(CameraSource):
    """A Basler camera (or the pylon emulator) as a line-scan strip camera."""

    name = "pylon"

    def __init__(
        self,
        key: StreamKey,
        geometry: StripGeometry,
        *,
        seed: int = 0,
        serial: str | None = None,
        image_folder: Path | None = None,
        realtime: bool = True,
        grab_timeout_ms: int = 5000,
        buffers: int = 16,
        emulator_failed_buffers: int = 0,
    ) -> None:
        super().__init__(key, geometry, seed=seed)
        self.serial = serial
        self.image_folder = Path(image_folder) if image_folder else None
        self.realtime = realtime
        self.grab_timeout_ms = grab_timeout_ms
        self.buffers = buffers
        self.emulator_failed_buffers = emulator_failed_buffers
        self.applied: dict[str, Any] = {}
        self._camera: Any = None
        self.timeouts = 0

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "serial": self.serial,
            "applied": self.applied,
            "emulation": os.environ.get("PYLON_CAMEMU", ""),
        }

    def open(self) -> None:
        pylon, genicam = _import_pylon()
        factory = pylon.TlFactory.GetInstance()
        devices = list(factory.EnumerateDevices())
        if self.serial:
            devices = [d for d in devices if d.GetSerialNumber() == self.serial]
        if not devices:
            hint = "" if os.environ.get("PYLON_CAMEMU") else " (for the SDK's emulator set PYLON_CAMEMU=1)"
            wanted = f" with serial {self.serial}" if self.serial else ""
            raise SourceError(f"pylon: no Basler camera{wanted} found{hint}")
        try:
            self._camera = pylon.InstantCamera(factory.CreateDevice(devices[0]))
            self._camera.Open()
            self._configure(genicam)
            self._camera.MaxNumBuffer.SetValue(self.buffers)
            self._camera.StartGrabbing(pylon.GrabStrategy_OneByOne)
        except genicam.GenericException as exc:
            self.close()
            raise SourceError(f"pylon: cannot configure camera {devices[0].GetSerialNumber()}: {exc}") from None
        log.info(
            "pylon: camera %s %s streaming: %s",
            devices[0].GetModelName(),
            devices[0].GetSerialNumber(),
            self.applied,
        )

    def _set(self, genicam: Any, name: str, value: Any, required: bool = True) -> None:
        node = getattr(self._camera, name, None)
        try:
            available = node is not None and genicam.IsWritable(node)
        except genicam.GenericException:
            available = False
        if not available:
            if required:
                raise SourceError(f"pylon: camera has no writable {name}")
            self.applied[name] = "unavailable"
            return
        node.SetValue(value)
        self.applied[name] = value

    def _configure(self, genicam: Any) -> None:
        geo = self.geometry
        self._set(genicam, "PixelFormat", "Mono8")
        self._set(genicam, "Width", geo.width_px)
        self._set(genicam, "Height", geo.frame_height_px)  # line-scan: lines per frame
        if self.image_folder is not None:
            if not self.image_folder.is_dir():
                raise SourceError(f"pylon: image_folder {self.image_folder} is not a folder")
            self._set(genicam, "ImageFilename", str(self.image_folder))
            self._set(genicam, "ImageFileMode", "On")
            self._set(genicam, "TestImageSelector", "Off")
        if self.realtime:
            self._set(genicam, "AcquisitionLineRate", float(geo.line_rate_hz), required=False)
            self._set(genicam, "AcquisitionFrameRateEnable", True, required=False)
            self._set(genicam, "AcquisitionFrameRate", float(geo.line_rate_hz / geo.frame_height_px), required=False)
        else:
            self._set(genicam, "AcquisitionFrameRateEnable", False, required=False)

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                if camera.IsGrabbing():
                    camera.StopGrabbing()
                camera.Close()
            except Exception as exc:  # noqa: BLE001 - closing must not mask the error that got us here
                log.warning("pylon: error while closing the camera: %s", exc)

    def _grabs(self) -> Iterator[Grab]:
        if self._camera is None:
            raise SourceError("pylon: use it as a context manager (open() was not called)")
        pylon, _ = _import_pylon()
        while not self.stopping and self._camera.IsGrabbing():
            result = self._camera.RetrieveResult(self.grab_timeout_ms, pylon.TimeoutHandling_Return)
            if result is None or not result.IsValid():
                self.timeouts += 1
                log.info(
                    "pylon: no image within %d ms (%d timeouts); waiting for strip",
                    self.grab_timeout_ms,
                    self.timeouts,
                )
                continue
            try:
                captured = time.time_ns()
                skipped = result.GetNumberOfSkippedImages()
                if result.GrabSucceeded():
                    grab = Grab(result.GetArray(), captured_ns=captured)  # GetArray copies out of the buffer
                else:
                    grab = Grab(
                        None,
                        captured_ns=captured,
                        reason=f"grab failed: {result.GetErrorCode():#x} {result.GetErrorDescription()}",
                    )
            finally:
                result.Release()
            for _ in range(skipped):
                yield Grab(None, captured_ns=captured, reason="skipped by the camera (host too slow)")
            yield grab
            if self.emulator_failed_buffers and grab.pixels is not None:
                self._force_failed_buffers()

    def _force_failed_buffers(self) -> None:
        """Diagnostics with the SDK's emulator: make the next buffers fail, as a flaky link would."""
        count, self.emulator_failed_buffers = self.emulator_failed_buffers, 0
        _, genicam = _import_pylon()
        try:
            self._camera.ForceFailedBufferCount.SetValue(count)
            self._camera.ForceFailedBuffer.Execute()
        except (genicam.GenericException, AttributeError):
            raise SourceError("pylon: emulator_failed_buffers needs the emulated camera (PYLON_CAMEMU=1)") from None
        log.warning("pylon: emulator told to fail the next %d buffer(s)", count)
