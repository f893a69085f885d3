"""Which execution providers can really start on this machine, and why not: `steel-inspect doctor`.

For TensorRT and CUDA: is the provider in this onnxruntime build, which of its libraries the
loader cannot find (and where each comes from), what the CUDA driver reports, and, with a model,
whether a session really starts on it. The session check creates sessions only: TensorRT gets no
explicit profiles and no engine cache here, so it builds no engine and the check takes seconds.
Nothing ONNX Runtime prints is hidden for a provider whose libraries are all present: if it then
fails, its own error lines are the diagnosis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnxruntime as ort

from inspection import gpu
from inspection.errors import ManifestError
from inspection.manifest import openvino_copy
from inspection.providers import GpuSettings, cache_root, provider_list, session_options
from inspection.registry import Manifest


def report(model: Manifest | None = None, cache: Path | None = None) -> dict[str, Any]:
    """Everything `doctor` finds, JSON-able."""
    gpu.preload(force=True)  # also without a driver: to say which of the other libraries are there
    devices = gpu.cuda_devices()
    providers: dict[str, Any] = {}
    for name in (*gpu.GPU_PROVIDERS, gpu.CPU):
        check = gpu.check(name)
        entry: dict[str, Any] = {"listed": check.listed, "missing": list(check.missing), "why_not": check.why_not()}
        entry["session"] = _session(model, name) if check.can_try and model is not None else None
        entry["starts"] = entry["session"] == "starts" if entry["session"] else False
        providers[name] = entry
    root = cache_root(cache)
    usable = [p for p in gpu.GPU_PROVIDERS if providers[p]["starts"]]
    return {
        "onnxruntime": {"version": ort.__version__, "built_for_cuda": getattr(ort, "cuda_version", None) or None,
                        "listed": ort.get_available_providers()},
        "driver": {"version": devices.driver_version, "error": devices.error or None,
                   "devices": [vars(d) for d in devices.devices]},
        "tensorrt_wheel": str(gpu.tensorrt_wheel_dir() or "") or None,
        "ld_library_path": os.environ.get("LD_LIBRARY_PATH"),
        "providers": providers,
        "model": None if model is None else {"version": model.version, "sha256": model.sha256},
        "engine_cache": {"root": str(root), "exists": root.is_dir()},
        "gpu_ready": usable,
        "openvino": _openvino(model),
    }


def _openvino(model: Manifest | None) -> dict[str, Any]:
    """OpenVINO's CPU plugin: installed or not, its version and CPU, and with a model whether it
    compiles it (no disk cache: the check leaves nothing behind) and which CPU backend "auto" runs."""
    from inspection.backends import openvino_installed

    if not openvino_installed():
        return {"installed": False, "install": "pip install -e '.[openvino]'"}
    import openvino

    from inspection.backends import cpu_backend
    from inspection.backends.openvino import OPENVINO, OpenVinoBackend, OpenVinoError, core

    found: dict[str, Any] = {"installed": True, "version": openvino.__version__.split("-")[0],
                             "cpu": core().get_property("CPU", "FULL_DEVICE_NAME"), "session": None, "auto": None}
    if model is not None:
        int8 = isinstance(model.data.get("quantization"), dict)
        copy = openvino_copy(model) if int8 else None  # an int8 copy's own OpenVINO quantization, if any
        if copy is not None:
            found["openvino_copy"] = str(copy.model_path)
        try:
            if copy is not None:
                copy.verify()
            OpenVinoBackend(copy.model_path if copy else model.model_path, copy.sha256 if copy else model.sha256)
            found["session"] = "starts"
        except (OpenVinoError, ManifestError) as exc:
            found["session"] = f"fails: {exc}"
        # what the worker's own choice gives (`inspection.backends.cpu_backend`), no disk cache
        chosen = cpu_backend(model.model_path, model.sha256, "auto", 1, None, int8=int8, openvino_copy=copy)
        found["auto"] = "OpenVINO" if chosen.providers[0] == OPENVINO else "ONNX Runtime"
    return found


def _openvino_line(v: dict[str, Any], model: dict[str, Any] | None) -> str:
    if not v["installed"]:
        return f"OpenVINO: not installed ({v['install']}); ONNX Runtime runs models on the CPU"
    line = f"OpenVINO {v['version']} on {v['cpu']}"
    if model is None or v["session"] is None:
        return line + (": auto runs fp32 models on it, int8 copies on ONNX Runtime unless they carry their own "
                       "OpenVINO quantization (give --model to check one)")
    own = " (its own OpenVINO quantization)" if v.get("openvino_copy") else ""
    return line + f": model {model['version']}{own} {v['session']}; auto runs it on the CPU with {v['auto']}"


def _session(model: Manifest, provider: str) -> str:
    """'starts', or why the session did not start on `provider`."""
    if provider == gpu.CPU:
        options, listed = session_options(1), [(gpu.CPU, {})]
    else:
        options = session_options(1, gpu=True)
        listed = provider_list([provider], GpuSettings(input_name=model.input_name, profiles=False))
    try:
        session = ort.InferenceSession(str(model.model_path), sess_options=options, providers=listed,
                                       enable_fallback=0)
    except Exception as exc:  # noqa: BLE001 - the provider's own message is the finding
        return "fails: " + (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    used = session.get_providers()
    return "starts" if used and used[0] == provider else f"fails: the session started on {used} instead"


def lines(found: dict[str, Any]) -> list[str]:
    """`report` as the lines `doctor` prints."""
    o = found["onnxruntime"]
    out = [f"onnxruntime {o['version']}" + (f", built for CUDA {o['built_for_cuda']}" if o["built_for_cuda"] else "")
           + f"; lists {', '.join(o['listed'])}"]
    d = found["driver"]
    if d["devices"]:
        out.append(f"NVIDIA driver {d['version']}: " + "; ".join(
            f"GPU {x['index']} {x['name']} (sm {x['compute_capability']}, {x['memory_mb']} MB)" for x in d["devices"]))
    else:
        out.append(f"NVIDIA driver: {d['error']}")
    out.append(f"TensorRT wheel libraries: {found['tensorrt_wheel'] or 'not installed'}; "
               f"LD_LIBRARY_PATH={found['ld_library_path'] or '(unset)'}")
    for name, p in found["providers"].items():
        if p["why_not"]:
            state = f"cannot start: {p['why_not']}"
        elif p["session"] is None:
            state = "libraries found; session not tried (no model: give --model)"
        else:
            state = p["session"]
        out.append(f"{name}: {state}")
    m = found["model"]
    if m:
        out.append(f"session check with model {m['version']} (sha256 {m['sha256'][:12]})")
    c = found["engine_cache"]
    out.append(f"TensorRT engine cache: {c['root']} ({'exists' if c['exists'] else 'created on first TensorRT start'})")
    out.append(_openvino_line(found["openvino"], m))
    ready = found["gpu_ready"]
    out.append(f"result: the GPU path can run on {', '.join(ready)}" if ready
               else "result: no GPU provider can start here; inference runs on the CPU")
    return out
