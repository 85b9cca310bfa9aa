"""A small, faithful stand-in for the parts of the TensorRT 10 and pycuda.driver Python APIs
that engines/tensorrt_*.py call. Injected with ``monkeypatch.setitem(sys.modules, ...)``.

Faithful where it matters for our code:
- device memory is separate from host memory: a DeviceAllocation is a private byte store,
  reachable only through memcpy_htod_async / memcpy_dtoh_async; its int() is an address that
  the execution context resolves, so a missed copy or a wrong address gives wrong outputs;
- the plan is opaque bytes (JSON here, never pickle) produced by build_serialized_network and
  refused by a Runtime of another TensorRT version;
- dynamic dims are -1 until set_input_shape; set_input_shape returns False outside the profile;
- execute_async_v3 runs the ONNX with onnxruntime on what is in device memory (FP16 engines
  round input and outputs through float16) and writes outputs back into device memory;
- the timing cache is opaque bytes; a build records whether its entries were already there.
Everything our code calls is recorded on ``FakeGpu`` for assertions.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import sys
import types
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FakeGpu:
    """Shared state of the fake driver + TensorRT (one 'machine')."""

    trt_version: str = "10.3.0"
    gpu_name: str = "NVIDIA RTX A2000"
    compute_capability: tuple = (8, 6)
    fast_fp16: bool = True
    memory: dict = field(default_factory=dict)  # address -> bytearray
    builds: list = field(default_factory=list)  # one dict per build_serialized_network
    pagelocked: list = field(default_factory=list)  # (size, dtype) per pagelocked_empty
    mem_allocs: list = field(default_factory=list)
    htod: list = field(default_factory=list)  # bytes copied per memcpy_htod_async
    dtoh: list = field(default_factory=list)
    executions: list = field(default_factory=list)  # input shape per execute_async_v3
    input_shapes_set: list = field(default_factory=list)
    context_depth: int = 0
    refuse_deserialize: int = 0  # the next N deserialize_cuda_engine calls fail (driver change)
    _addr: itertools.count = field(default_factory=lambda: itertools.count(0x7F0000000000, 0x100000))

    def modules(self) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
        """(tensorrt, pycuda, pycuda.driver) module objects backed by this GPU."""
        return _make_trt(self), *_make_pycuda(self)


# ---------------------------------------------------------------------------- pycuda.driver
def _make_pycuda(gpu: FakeGpu):
    drv = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    class Context:
        def push(self):
            gpu.context_depth += 1

        def pop(self):
            assert gpu.context_depth > 0, "pop without push"
            gpu.context_depth -= 1

        def detach(self):
            pass

    class Device:
        def __init__(self, index):
            if index != 0:
                raise Error(f"cuDeviceGet failed: invalid device ordinal {index}")

        def name(self):
            return gpu.gpu_name

        def compute_capability(self):
            return gpu.compute_capability

        def retain_primary_context(self):
            return Context()

    class DeviceAllocation:
        def __init__(self, nbytes):
            self.addr = next(gpu._addr)
            self.nbytes = nbytes
            gpu.memory[self.addr] = bytearray(nbytes)

        def __int__(self):
            return self.addr

        def free(self):
            gpu.memory.pop(self.addr, None)

    class Stream:
        def __init__(self):
            self.handle = next(gpu._addr)

        def synchronize(self):
            pass

    def _need_context():
        if gpu.context_depth <= 0:
            raise Error("invalid device context (no current CUDA context)")

    def mem_alloc(nbytes):
        _need_context()
        gpu.mem_allocs.append(nbytes)
        return DeviceAllocation(int(nbytes))

    def pagelocked_empty(shape, dtype):
        gpu.pagelocked.append((shape, np.dtype(dtype)))
        return np.empty(shape, dtype)

    def memcpy_htod_async(dest, src, stream=None):
        _need_context()
        data = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        buf = gpu.memory[int(dest)]
        assert data.size <= len(buf), "htod copy larger than the device allocation"
        buf[: data.size] = data.tobytes()
        gpu.htod.append(data.size)

    def memcpy_dtoh_async(dest, src, stream=None):
        _need_context()
        assert isinstance(dest, np.ndarray) and dest.flags.c_contiguous
        buf = gpu.memory[int(src)]
        assert dest.nbytes <= len(buf), "dtoh copy larger than the device allocation"
        dest.view(np.uint8).reshape(-1)[:] = np.frombuffer(bytes(buf[: dest.nbytes]), np.uint8)
        gpu.dtoh.append(dest.nbytes)

    drv.Error = Error
    drv.init = lambda flags=0: None
    drv.Device = Device
    drv.Stream = Stream
    drv.mem_alloc = mem_alloc
    drv.pagelocked_empty = pagelocked_empty
    drv.memcpy_htod_async = memcpy_htod_async
    drv.memcpy_dtoh_async = memcpy_dtoh_async
    pkg = types.ModuleType("pycuda")
    pkg.__path__ = []
    pkg.driver = drv
    return pkg, drv


# ---------------------------------------------------------------------------- tensorrt
def _make_trt(gpu: FakeGpu):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = gpu.trt_version

    class _Severity:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    class ILogger:
        Severity = _Severity

        def __init__(self):
            pass

    class Logger(ILogger):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity=_Severity.WARNING):
            super().__init__()

        def log(self, severity, msg):
            pass

    class BuilderFlag:
        FP16, BF16, INT8, TF32 = "FP16", "BF16", "INT8", "TF32"

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class TensorIOMode:
        NONE, INPUT, OUTPUT = "NONE", "INPUT", "OUTPUT"

    class DataType:
        FLOAT, HALF = "FLOAT", "HALF"

    def nptype(dt):
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16}[dt]

    def _log(logger, severity, msg):
        logger.log(severity, msg)

    class HostMemory(bytes):
        """IHostMemory supports the buffer protocol; bytes does too."""

        def serialize(self):
            return self

    # ------------------------------------------------------------ builder side
    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape, self.dtype = name, tuple(shape), DataType.FLOAT

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.inputs, self.outputs, self.onnx_path = [], [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.logger, self._errors = network, logger, []

        def parse_from_file(self, path):
            import onnx

            try:
                model = onnx.load(path)
            except Exception as exc:  # real parser reports, never raises
                self._errors.append(f"ModelImporter: failed to parse {path}: {exc}")
                return False
            dims = lambda vi: [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
            inits = {i.name for i in model.graph.initializer}
            self.network.inputs = [Tensor(i.name, dims(i)) for i in model.graph.input if i.name not in inits]
            self.network.outputs = [Tensor(o.name, dims(o)) for o in model.graph.output]
            self.network.onnx_path = str(path)
            return True

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, i):
            return self._errors[i]

    class OptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, input, min, opt, max):
            self.shapes[input] = [list(min), list(opt), list(max)]

    class TimingCache:
        def __init__(self, blob):
            self.entries = set(json.loads(bytes(blob).decode())) if blob else set()

        def serialize(self):
            return HostMemory(json.dumps(sorted(self.entries)).encode())

    class BuilderConfig:
        def __init__(self):
            self.flags, self.pools, self.profiles, self.timing_cache = set(), {}, [], None

        def set_flag(self, flag):
            self.flags.add(flag)

        def get_flag(self, flag):
            return flag in self.flags

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            return TimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        @property
        def platform_has_fast_fp16(self):
            return gpu.fast_fp16

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            dynamic = [t for t in network.inputs if -1 in t.shape]
            if dynamic and not config.profiles:
                _log(self.logger, _Severity.ERROR, "Network has dynamic or shape inputs, but no optimization profile")
                return None
            profile = config.profiles[0].shapes if config.profiles else {}
            for t in dynamic:
                if t.name not in profile:
                    _log(self.logger, _Severity.ERROR, f"no profile shapes for input {t.name}")
                    return None
            onnx_sha = hashlib.sha256(open(network.onnx_path, "rb").read()).hexdigest()
            fp16 = BuilderFlag.FP16 in config.flags
            tactic = f"{gpu.gpu_name}|{onnx_sha}|fp16={fp16}"
            cache = config.timing_cache
            gpu.builds.append({
                "flags": set(config.flags), "profile": profile, "pools": dict(config.pools),
                "timing_cache_hit": cache is not None and tactic in cache.entries, "network_flags": network.flags,
            })
            if cache is not None:
                cache.entries.add(tactic)
            plan = {"magic": "fake-trt-plan", "trt_version": gpu.trt_version, "onnx_path": network.onnx_path,
                    "fp16": fp16, "profile": profile,
                    "inputs": [[t.name, list(t.shape)] for t in network.inputs],
                    "outputs": [[t.name, list(t.shape)] for t in network.outputs]}
            return HostMemory(json.dumps(plan).encode())

    # ------------------------------------------------------------ runtime side
    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            if gpu.refuse_deserialize > 0:
                gpu.refuse_deserialize -= 1
                _log(self.logger, _Severity.ERROR, "Serialization error: incompatible plan")
                return None
            try:
                plan = json.loads(bytes(serialized_engine).decode())
                assert plan["magic"] == "fake-trt-plan"
            except Exception:
                _log(self.logger, _Severity.ERROR, "Serialization assertion failed: magic tag")
                return None
            if plan["trt_version"] != gpu.trt_version:
                _log(self.logger, _Severity.ERROR, "Serialization error: version tag mismatch")
                return None
            return CudaEngine(plan)

    class CudaEngine:
        def __init__(self, plan):
            import onnxruntime as ort

            self.plan = plan
            self.session = ort.InferenceSession(plan["onnx_path"], providers=["CPUExecutionProvider"])
            self._io = [(n, s, TensorIOMode.INPUT) for n, s in plan["inputs"]] + \
                       [(n, s, TensorIOMode.OUTPUT) for n, s in plan["outputs"]]

        @property
        def num_io_tensors(self):
            return len(self._io)

        def get_tensor_name(self, index):
            return self._io[index][0]

        def _find(self, name):
            return next(t for t in self._io if t[0] == name)

        def get_tensor_mode(self, name):
            return self._find(name)[2]

        def get_tensor_shape(self, name):
            return tuple(self._find(name)[1])

        def get_tensor_dtype(self, name):
            return DataType.FLOAT

        def get_tensor_profile_shape(self, name, profile_index):
            return [tuple(s) for s in self.plan["profile"][name]]

        def create_execution_context(self):
            return ExecutionContext(self)

    class ExecutionContext:
        def __init__(self, engine):
            self.engine = engine
            self.input_shapes = {}
            self.addresses = {}

        def set_input_shape(self, name, shape):
            shape = tuple(int(d) for d in shape)
            lo, _, hi = self.engine.plan["profile"][name]
            gpu.input_shapes_set.append(shape)
            if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
                return False
            self.input_shapes[name] = shape
            return True

        def _out_shapes(self):
            (name, shape), = self.input_shapes.items()
            probe = self.engine.session.run(None, {name: np.zeros((1, *shape[1:]), np.float32)})
            outs = [o.name for o in self.engine.session.get_outputs()]
            return {o: (shape[0], *p.shape[1:]) for o, p in zip(outs, probe)}

        def get_tensor_shape(self, name):
            if name in self.input_shapes:
                return self.input_shapes[name]
            if self.engine.get_tensor_mode(name) == TensorIOMode.OUTPUT and self.input_shapes:
                return self._out_shapes()[name]
            return self.engine.get_tensor_shape(name)

        def set_tensor_address(self, name, memory):
            self.addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle):
            if gpu.context_depth <= 0:
                return False
            names = [t[0] for t in self.engine._io]
            if set(self.addresses) != set(names) or not self.input_shapes:
                return False
            (name, shape), = self.input_shapes.items()
            n = int(np.prod(shape))
            x = np.frombuffer(bytes(gpu.memory[self.addresses[name]][: n * 4]), np.float32).reshape(shape)
            fp16 = self.engine.plan["fp16"]
            if fp16:
                x = x.astype(np.float16).astype(np.float32)
            outs = self.engine.session.run(None, {name: x})
            for o, y in zip([o.name for o in self.engine.session.get_outputs()], outs):
                if fp16:
                    y = y.astype(np.float16)
                raw = np.ascontiguousarray(y, np.float32).view(np.uint8).reshape(-1)
                buf = gpu.memory[self.addresses[o]]
                assert raw.size <= len(buf), "output larger than its device allocation"
                buf[: raw.size] = raw.tobytes()
            gpu.executions.append(shape)
            return True

    def volume(shape):
        return int(np.prod(shape))

    for obj in (ILogger, Logger, BuilderFlag, MemoryPoolType, TensorIOMode, DataType, Builder, OnnxParser,
                Runtime, nptype, volume):
        setattr(trt, obj.__name__, obj)
    return trt


def install(monkeypatch, gpu: FakeGpu) -> FakeGpu:
    """Put the stand-in tensorrt / pycuda modules where the engine imports them (for one test)."""
    trt, pkg, drv = gpu.modules()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    return gpu
