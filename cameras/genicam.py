"""Any GenICam camera through a vendor's GenTL producer (``.cti``) and `harvesters` (``genicam`` extra).

NOT verified against a real GenTL camera: no vendor producer or camera is available here.
The tests run it against ``viky.cti``, the virtual GenTL producer shipped inside the
``genicam`` wheel (harvesters' dependency; a simulated bouncing-ball camera), so producer
loading, device enumeration, configuration, acquisition and buffer handling are exercised
through the real GenTL stack; a missing producer or device fails with a clear `SourceError`.
The Basler path (`cameras.pylon`) is tested through the pylon SDK's own camera emulator.

Camera options (``[cameras.options]``): ``cti`` (path of the GenTL producer, required; else
the environment variable ``STEEL_INSPECT_CTI``), ``serial`` (pick one device),
``grab_timeout_ms`` (default 5000). Line-scan settings as for pylon:
``Width`` = pixels across, ``Height`` = lines per frame, ``AcquisitionLineRate`` when paced.
Incomplete buffers (harvesters' INCOMPLETE_BUFFER event) are counted as dropped, never passed on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2

from cameras.base import CameraSource, Grab, StripGeometry
from inspection.errors import SourceError
from inspection.frame import StreamKey

log = logging.getLogger(__name__)


class GenTLSource(CameraSource):
    """A GenICam camera reached through a GenTL producer; see the module docstring."""

    name = "genicam"

    def __init__(
        self,
        key: StreamKey,
        geometry: StripGeometry,
        *,
        seed: int = 0,
        cti: str | Path | None = None,
        serial: str | None = None,
        realtime: bool = True,
        grab_timeout_ms: int = 5000,
    ) -> None:
        super().__init__(key, geometry, seed=seed)
        cti = cti or os.environ.get("STEEL_INSPECT_CTI") or None
        self.cti = Path(cti) if cti else None
        self.serial = serial
        self.realtime = realtime
        self.grab_timeout_ms = grab_timeout_ms
        self.applied: dict[str, Any] = {}
        self._harvester: Any = None
        self._acquirer: Any = None
        self._incomplete = 0

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "cti": str(self.cti) if self.cti else None,
            "serial": self.serial,
            "applied": self.applied,
        }

    def open(self) -> None:
        if self.cti is None:
            raise SourceError(
                "genicam: no GenTL producer configured: set options.cti to the vendor's .cti file "
                "(or STEEL_INSPECT_CTI)"
            )
        if not self.cti.is_file():
            raise SourceError(f"genicam: GenTL producer {self.cti} does not exist")
        try:
            from harvesters.core import Harvester
        except ImportError as exc:
            raise SourceError(
                f"genicam source needs harvesters: pip install 'steel-inspect[genicam]' ({exc})"
            ) from None
        self._harvester = Harvester()
        try:
            self._harvester.add_file(str(self.cti), check_existence=True, check_validity=True)
            self._harvester.update()
        except (OSError, FileNotFoundError) as exc:
            self.close()
            raise SourceError(f"genicam: cannot load GenTL producer {self.cti}: {exc}") from None
        devices = self._harvester.device_info_list
        if self.serial:
            devices = [d for d in devices if getattr(d, "serial_number", None) == self.serial]
        if not devices:
            self.close()
            wanted = f" with serial {self.serial}" if self.serial else ""
            raise SourceError(f"genicam: producer {self.cti} found no device{wanted}")
        self._acquirer = self._harvester.create(devices[0])
        self._configure()
        from harvesters.core import Callback, ImageAcquirer

        source = self

        class CountIncomplete(Callback):  # harvesters calls emit() for each discarded incomplete buffer
            def emit(self, context: object = None) -> None:
                source._incomplete += 1

        self._acquirer.add_callback(ImageAcquirer.Events.INCOMPLETE_BUFFER, CountIncomplete())
        self._acquirer.start()
        log.info("genicam: device %s streaming: %s", devices[0], self.applied)

    def _configure(self) -> None:
        nodes = self._acquirer.remote_device.node_map
        geo = self.geometry
        wanted: dict[str, Any] = {
            "PixelFormat": "Mono8",
            "Width": geo.width_px,
            "Height": geo.frame_height_px,
        }
        if self.realtime:
            wanted["AcquisitionLineRate"] = float(geo.line_rate_hz)
        for name, value in wanted.items():
            node = getattr(nodes, name, None)
            if node is None:
                if name == "AcquisitionLineRate":
                    self.applied[name] = "unavailable"
                    continue
                raise SourceError(f"genicam: device has no {name} node")
            node.value = value
            self.applied[name] = value

    def close(self) -> None:
        acquirer, self._acquirer = self._acquirer, None
        harvester, self._harvester = self._harvester, None
        try:
            if acquirer is not None:
                acquirer.stop()
                acquirer.destroy()
            if harvester is not None:
                harvester.reset()
        except Exception as exc:  # noqa: BLE001 - closing must not mask the error that got us here
            log.warning("genicam: error while closing: %s", exc)

    def _grabs(self) -> Iterator[Grab]:
        if self._acquirer is None:
            raise SourceError("genicam: use it as a context manager (open() was not called)")
        while not self.stopping:
            before = self._incomplete
            buffer = self._acquirer.try_fetch(timeout=self.grab_timeout_ms / 1000.0)
            captured = time.time_ns()
            if buffer is None:
                if self._incomplete > before:
                    yield Grab(None, captured_ns=captured, reason="incomplete buffer")
                continue
            with buffer:
                component = buffer.payload.components[0]
                channels = int(component.num_components_per_pixel or 1)
                shape = (component.height, component.width) + ((channels,) if channels > 1 else ())
                pixels = component.data.reshape(shape).copy()  # the buffer goes back to the producer
            if pixels.ndim == 3:  # a colour-only device: the models work on grey levels
                pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2GRAY if channels == 4 else cv2.COLOR_RGB2GRAY)
            yield Grab(pixels, captured_ns=captured)
