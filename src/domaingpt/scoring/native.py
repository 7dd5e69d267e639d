"""Native CPU kernels: built from ``cpu_kernels.c`` (the forward pass) on first use,
called through ctypes.

Why native code: scoring a small character model on a CPU spends a third of its time
outside the matmuls (attention at block 64, GELU, LayerNorm, log-softmax, and the page
faults of freshly allocated activations). The kernels here do that work in one pass
each; see :mod:`domaingpt.cpu_scoring` for the engine that uses them.

The library is compiled once per machine with the system C compiler (``$CC``, else
``cc``/``gcc``/``clang``) into ``~/.cache/domaingpt/native`` (``$XDG_CACHE_HOME``
moves it), keyed by the source, the flags and the compiler, and loaded with ctypes (which
releases the GIL during each call, so worker threads run kernels in parallel). Nothing
here is required: without an x86-64 CPU with AVX2 and FMA, without a compiler, or with
``DOMAINGPT_NATIVE=0``, :func:`load` returns ``None`` and callers use PyTorch's ops;
:func:`status` says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

from domaingpt.data.corpus import cache_dir

ENV = "DOMAINGPT_NATIVE"  # "0" turns the native kernels off
ABI_VERSION = 4
#: The library's sources, compiled together.
SOURCES = ("kernels_common.h", "cpu_kernels.c")
FLAGS = ("-O3", "-std=c11", "-mavx2", "-mfma", "-fPIC", "-shared")

_P = ctypes.c_void_p
_SIGNATURES = {
    "dg_abi_version": ([], ctypes.c_int),
    "dg_attention_scratch": ([ctypes.c_int, ctypes.c_int], ctypes.c_long),
    "dg_causal_attention": (
        [_P, _P, ctypes.c_long, ctypes.c_int, ctypes.c_int, ctypes.c_int, _P],
        ctypes.c_int,
    ),
    "dg_gelu": ([_P, ctypes.c_long], None),
    "dg_layer_norm": ([_P, _P, _P, _P, ctypes.c_long, ctypes.c_int, ctypes.c_float], None),
    "dg_token_nll": ([_P, _P, _P, ctypes.c_long, ctypes.c_int], None),
}


def _cpu_has_avx2_fma() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


def _compiler() -> str | None:
    cc = os.environ.get("CC", "")
    if cc and shutil.which(cc):
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        if path := shutil.which(name):
            return path
    return None


def _build(sources: dict[str, bytes], cc: str) -> Path:
    """Compile ``sources`` into the cache (once: the file name is a hash of its inputs)."""
    joined = b"".join(name.encode() + b"\0" + text for name, text in sources.items())
    key = hashlib.sha256(joined + " ".join((cc, *FLAGS)).encode()).hexdigest()[:16]
    out = cache_dir() / "native" / f"cpu_kernels-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        for name, text in sources.items():
            (Path(tmp) / name).write_bytes(text)
        units = [str(Path(tmp) / name) for name in sources if name.endswith(".c")]
        lib = Path(tmp) / out.name
        done = subprocess.run(
            [cc, *FLAGS, "-o", str(lib), *units, "-lm"], capture_output=True, text=True
        )
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["no output"])[0]
            raise OSError(
                f"{cc} failed on {', '.join(n for n in sources if n.endswith('.c'))}: {first}"
            )
        os.replace(lib, out)  # atomic: concurrent builders all end with a whole file
    return out


@lru_cache(maxsize=1)
def _load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None, f"turned off by {ENV}={os.environ[ENV]}"
    if not _cpu_has_avx2_fma():
        return None, "needs an x86-64 CPU with AVX2 and FMA (as /proc/cpuinfo lists them)"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC or install gcc/clang)"
    here = resources.files("domaingpt.scoring")
    sources = {name: here.joinpath(name).read_bytes() for name in SOURCES}
    try:
        lib = ctypes.CDLL(str(_build(sources, cc)))
    except OSError as e:
        return None, str(e)
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    if lib.dg_abi_version() != ABI_VERSION:
        return None, "the cached library does not match this version of domaingpt"
    return lib, f"AVX2 kernels built with {cc}"


def load() -> ctypes.CDLL | None:
    """The kernel library, or ``None`` where it cannot be used (see :func:`status`)."""
    return _load()[0]


def status() -> str:
    """One line: whether the native kernels are in use, and if not, why not."""
    lib, why = _load()
    return f"native CPU kernels: {'on' if lib else 'off'} ({why})"


def _ptr(t: torch.Tensor | None, numel: int, dtype: torch.dtype = torch.float32) -> int | None:
    """The address of ``t`` once its dtype, size and layout are what the C code will read or
    write: a wrong buffer must be an error here, not memory corruption there."""
    if t is None:
        return None
    if t.dtype != dtype or t.numel() != numel or not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError(
            f"native kernel wants a contiguous CPU {dtype} tensor of {numel} elements, got "
            f"{t.dtype} {tuple(t.shape)} on {t.device}"
        )
    return t.data_ptr()


def _lib() -> ctypes.CDLL:
    lib = load()
    if lib is None:
        raise RuntimeError(status())
    return lib


def attention_scratch(T: int, C: int) -> torch.Tensor:
    """The work space :func:`causal_attention` needs for windows of ``T`` positions and
    ``C`` columns: allocate it once and pass it to every call."""
    return torch.empty(_lib().dg_attention_scratch(T, C))


def causal_attention(
    qkv: torch.Tensor, n_head: int, out: torch.Tensor, scratch: torch.Tensor | None = None
) -> torch.Tensor:
    """``out`` (B, T, C) = causal attention of the fused ``qkv`` (B, T, 3C) projection:
    the values of ``F.scaled_dot_product_attention(q, k, v, is_causal=True)``."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    if C3 % 3 or C % n_head or (C // n_head) % 16:
        raise ValueError(
            f"causal_attention: {C3} columns, {n_head} heads: head size must be a multiple of 16"
        )
    lib = _lib()
    need = lib.dg_attention_scratch(T, C)
    if scratch is None:
        scratch = torch.empty(need)
    if scratch.numel() < need:
        raise ValueError(f"causal_attention: scratch of {scratch.numel()} floats, needs {need}")
    lib.dg_causal_attention(
        _ptr(qkv, B * T * C3), _ptr(out, B * T * C), B, T, C, n_head, _ptr(scratch, scratch.numel())
    )
    return out


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU in place."""
    _lib().dg_gelu(_ptr(x, x.numel()), x.numel())
    return x


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float, out: torch.Tensor
) -> torch.Tensor:
    """LayerNorm over the last dimension (a multiple of 8) into ``out``."""
    C = x.shape[-1]
    if C % 8:
        raise ValueError(f"layer_norm: {C} columns, must be a multiple of 8")
    n = x.numel()
    lib = _lib()
    lib.dg_layer_norm(_ptr(x, n), _ptr(weight, C), _ptr(bias, C), _ptr(out, n), n // C, C, eps)
    return out


def token_nll(logits: torch.Tensor, targets: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy (nats) of ``logits`` (N, V) at ``targets`` (N,) into ``out``."""
    N, V = logits.shape
    if N and (int(targets.min()) < 0 or int(targets.max()) >= V):
        raise ValueError(f"token_nll: targets must lie in [0, {V})")
    lib = _lib()
    lib.dg_token_nll(_ptr(logits, N * V), _ptr(targets, N, torch.int64), _ptr(out, N), N, V)
    return out
