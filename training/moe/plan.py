"""Check N dense experts against each other and plan the tensors of their stock MoE checkpoint (no I/O of weights):
Llama/Mistral -> Mixtral, Qwen3 -> Qwen3-MoE, Qwen2 -> Qwen2-MoE (its shared expert written off: 0 wide)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run_config.devices import torch_dtype
from run_config.errors import DataError
from training.moe.safetensors_stream import CheckpointReader, TensorInfo

# Llama FFN projection -> Mixtral expert weight (w1 = gate, w3 = up, w2 = down).
FFN_TO_MIXTRAL = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}
MIXTRAL_TO_FFN = {v: k for k, v in FFN_TO_MIXTRAL.items()}
_FFN_KEY = re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.weight$")


@dataclass(frozen=True)
class MoeLayout:
    """How one dense family's FFNs sit in its stock MoE checkpoint (the names transformers' loader reads)."""

    architecture: str  # the MoE class
    block: str  # the sparse block of a layer: model.layers.L.<block>
    expert_names: dict[str, str]  # dense projection -> expert weight name
    biases: tuple[str, ...] = ()  # config bias flags the MoE class supports
    shared_expert: bool = False  # Qwen2-MoE always builds a shared expert: written 0 wide (off)

    def router_key(self, layer: int) -> str:
        return f"model.layers.{layer}.{self.block}.gate.weight"

    def expert_key(self, layer: int, expert: int, proj: str) -> str:
        return f"model.layers.{layer}.{self.block}.experts.{expert}.{self.expert_names[proj]}.weight"

    def parse(self, name: str) -> tuple[int, int, str] | None:
        """(layer, expert, dense projection) of an expert key of this layout, else None."""
        names = "|".join(self.expert_names.values())
        m = re.match(rf"^model\.layers\.(\d+)\.{self.block}\.experts\.(\d+)\.({names})\.weight$", name)
        back = {v: k for k, v in self.expert_names.items()}
        return (int(m[1]), int(m[2]), back[m[3]]) if m else None

    def is_block_only(self, name: str) -> bool:
        """True for the router and shared-expert tensors (no dense counterpart)."""
        block = f".{self.block}."
        return block in name and (name.endswith(".gate.weight") or ".shared_expert" in name) and "experts." not in name


MIXTRAL = MoeLayout("MixtralForCausalLM", "block_sparse_moe", FFN_TO_MIXTRAL)
_QWEN_NAMES = {p: p for p in FFN_TO_MIXTRAL}
QWEN3_MOE = MoeLayout("Qwen3MoeForCausalLM", "mlp", _QWEN_NAMES, biases=("attention_bias",))
QWEN2_MOE = MoeLayout("Qwen2MoeForCausalLM", "mlp", _QWEN_NAMES, shared_expert=True)
LAYOUTS = {"llama": MIXTRAL, "mistral": MIXTRAL, "qwen3": QWEN3_MOE, "qwen2": QWEN2_MOE}
SUPPORTED_TYPES = tuple(LAYOUTS)
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)
# Config fields that must agree among the experts for their tensors to be merged.
ARCH_FIELDS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "vocab_size",
    "rms_norm_eps",
    "rope_parameters",
    "rope_theta",
    "rope_scaling",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
)


def router_key(layer: int) -> str:
    """Mixtral router name of `layer`."""
    return MIXTRAL.router_key(layer)


def expert_key(layer: int, expert: int, w: str) -> str:
    """Mixtral expert weight name (`w`: w1, w2, w3)."""
    return MIXTRAL.expert_key(layer, expert, MIXTRAL_TO_FFN[w])


def parse_moe_key(name: str) -> tuple[int, int, str] | None:
    """(layer, expert, dense projection) of an expert key of any layout, else None."""
    for layout in (MIXTRAL, QWEN3_MOE):
        parsed = layout.parse(name)
        if parsed is not None:
            return parsed
    return None


def dense_ffn_key(layer: int, proj: str) -> str:
    return f"model.layers.{layer}.mlp.{proj}.weight"


@dataclass
class DenseCheckpoint:
    """One dense expert (or base) folder: its config and lazily readable tensors."""

    folder: Path
    config: dict[str, Any]
    reader: CheckpointReader

    @property
    def tied(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", False))

    @property
    def layout(self) -> MoeLayout:
        return LAYOUTS[self.config["model_type"]]


def open_dense(folder: str | Path) -> DenseCheckpoint:
    """Read a dense checkpoint's config.json and tensor headers; errors name the file and field."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise DataError(str(folder), None, None, "not a model folder (no config.json)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(str(cfg_path), e.lineno, None, f"invalid JSON: {e.msg}") from None
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise DataError(
            str(cfg_path),
            None,
            "model_type",
            f"{model_type!r} cannot become an MoE expert; supported: {', '.join(SUPPORTED_TYPES)}",
        )
    layout = LAYOUTS[model_type]
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag) and flag not in layout.biases:
            raise DataError(str(cfg_path), None, flag, f"biases have no place in a {layout.architecture} checkpoint")
    if config.get("use_sliding_window") and layout is not MIXTRAL:
        raise DataError(str(cfg_path), None, "use_sliding_window", "sliding-window Qwen experts are not supported")
    return DenseCheckpoint(folder, config, CheckpointReader(folder))


def check_compatible(ref: DenseCheckpoint, other: DenseCheckpoint, what: str) -> None:
    """Raise DataError naming `other`'s file and the first field/tensor that differs from `ref`."""
    for field in ARCH_FIELDS:
        if ref.config.get(field) != other.config.get(field):
            raise DataError(
                str(other.folder / "config.json"),
                None,
                field,
                f"{what} has {other.config.get(field)!r} but {ref.folder} has {ref.config.get(field)!r}",
            )
    ref_keys, keys = set(_kept(ref)), set(_kept(other))
    if ref_keys != keys:
        diff = sorted(ref_keys ^ keys)
        raise DataError(
            str(other.folder), None, diff[0], f"{what}'s tensors differ from {ref.folder}'s ({len(diff)} names differ)"
        )
    for k in sorted(ref_keys):
        if ref.reader.info[k].shape != other.reader.info[k].shape:
            raise DataError(
                str(other.folder),
                None,
                k,
                f"{what} has shape {list(other.reader.info[k].shape)} "
                f"but {ref.folder} has {list(ref.reader.info[k].shape)}",
            )


def _kept(ckpt: DenseCheckpoint) -> list[str]:
    keys = [k for k in ckpt.reader.info if not k.endswith(SKIPPED_SUFFIXES)]
    if ckpt.tied:
        keys = [k for k in keys if k != "lm_head.weight"]
    return keys


def check_tokenizers(folders: list[Path]) -> None:
    """Raise DataError when the experts' tokenizers differ (vocabulary or special tokens)."""
    from transformers import AutoTokenizer

    def signature(folder: Path) -> tuple:
        try:
            tok = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise DataError(str(folder), None, "tokenizer", f"cannot load the tokenizer: {e}") from None
        return tok.get_vocab(), tok.all_special_tokens, tok.bos_token, tok.eos_token

    ref = signature(folders[0])
    for i, folder in enumerate(folders[1:], 1):
        sig = signature(folder)
        if sig[0] != ref[0]:
            raise DataError(
                str(folder),
                None,
                "tokenizer",
                f"expert {i}'s vocabulary ({len(sig[0])} tokens) differs from expert 0's ({len(ref[0])} tokens)",
            )
        if sig[1:] != ref[1:]:
            raise DataError(str(folder), None, "tokenizer", f"expert {i}'s special tokens differ from expert 0's")


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor and where it comes from: ('shared', key) | ('expert', e, key) | ('router', layer)."""

    info: TensorInfo
    source: tuple


def tensor_order(name: str) -> tuple:
    """Sort key of an output tensor: embeddings, then layer by layer, then the rest."""
    m = _LAYER.match(name)
    if m:
        return (1, int(m[1]), name)
    return (0 if "embed" in name else 2, 0, name)


def plan_merge(experts: list[DenseCheckpoint], dtype: str) -> list[PlannedTensor]:
    """Return the MoE tensors, grouped by layer: shared ones, the router (and Qwen2-MoE's shared expert, 0 wide),
    then every expert's FFN."""
    ref = experts[0]
    layout = ref.layout
    out_dtype = (lambda d: d) if dtype == "auto" else (lambda _d: torch_dtype(dtype))
    n_layers = int(ref.config["num_hidden_layers"])
    hidden = int(ref.config["hidden_size"])
    ffn_keys = {k for k in _kept(ref) if _FFN_KEY.match(k)}
    expected = {dense_ffn_key(layer, p) for layer in range(n_layers) for p in FFN_TO_MIXTRAL}
    if ffn_keys != expected:
        missing = sorted(expected - ffn_keys)
        raise DataError(
            str(ref.folder), None, missing[0] if missing else "mlp", "expected gate/up/down projections in every layer"
        )
    if not ref.tied and "lm_head.weight" not in ref.reader:
        raise DataError(str(ref.folder), None, "lm_head.weight", "missing while tie_word_embeddings is false")
    plan: list[PlannedTensor] = []
    router_dtype = out_dtype(ref.reader.info[dense_ffn_key(0, "gate_proj")].dtype)
    for key in sorted((k for k in _kept(ref) if k not in ffn_keys), key=tensor_order):
        info = ref.reader.info[key]
        plan.append(PlannedTensor(TensorInfo(key, info.shape, out_dtype(info.dtype)), ("shared", key)))
    for layer in range(n_layers):
        plan.append(
            PlannedTensor(TensorInfo(layout.router_key(layer), (len(experts), hidden), router_dtype), ("router", layer))
        )
        if layout.shared_expert:
            shapes = {"gate_proj": (0, hidden), "up_proj": (0, hidden), "down_proj": (hidden, 0), "_gate": (1, hidden)}
            for proj, shape in shapes.items():
                name = f"model.layers.{layer}.mlp.shared_expert{'.' + proj if proj != '_gate' else '_gate'}.weight"
                plan.append(PlannedTensor(TensorInfo(name, shape, router_dtype), ("zeros",)))
        for e in range(len(experts)):
            for proj in FFN_TO_MIXTRAL:
                info = ref.reader.info[dense_ffn_key(layer, proj)]
                plan.append(
                    PlannedTensor(
                        TensorInfo(layout.expert_key(layer, e, proj), info.shape, out_dtype(info.dtype)),
                        ("expert", e, dense_ffn_key(layer, proj)),
                    )
                )
    return sorted(plan, key=lambda p: tensor_order(p.info.name))


def mixtral_config(dense: dict[str, Any], num_experts: int, top_k: int, aux_coef: float, dtype: str) -> Any:
    """Build the MixtralConfig of the merged model from a dense expert's config.json."""
    from transformers import MixtralConfig

    keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "hidden_act",
        "max_position_embeddings",
        "initializer_range",
        "rms_norm_eps",
        "use_cache",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "tie_word_embeddings",
        "sliding_window",
        "attention_dropout",
        "rope_parameters",
    )
    kwargs = {k: dense[k] for k in keys if k in dense}
    if "rope_parameters" not in kwargs and "rope_theta" in dense:
        kwargs["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": dense["rope_theta"],
            **(dense.get("rope_scaling") or {}),
        }
    cfg = MixtralConfig(
        num_local_experts=num_experts,
        num_experts_per_tok=top_k,
        router_aux_loss_coef=aux_coef,
        router_jitter_noise=0.0,
        output_router_logits=False,
        **kwargs,
    )
    cfg.architectures = ["MixtralForCausalLM"]
    cfg.dtype = dense.get("dtype", dense.get("torch_dtype", "float32")) if dtype == "auto" else dtype
    return cfg


def qwen_moe_config(dense: dict[str, Any], num_experts: int, top_k: int, aux_coef: float, dtype: str) -> Any:
    """The Qwen3MoeConfig / Qwen2MoeConfig of the merged model: every layer sparse, experts as wide as the dense
    FFN, top-k weights renormalised (as Mixtral's), Qwen2-MoE's shared expert 0 wide (off)."""
    from transformers import Qwen2MoeConfig, Qwen3MoeConfig

    qwen3 = dense["model_type"] == "qwen3"
    keys = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "hidden_act",
        "max_position_embeddings",
        "initializer_range",
        "rms_norm_eps",
        "use_cache",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "tie_word_embeddings",
        "rope_parameters",
        "attention_dropout",
        "use_sliding_window",
        "sliding_window",
        "max_window_layers",
        *(("attention_bias",) if qwen3 else ()),
    )
    kwargs = {k: dense[k] for k in keys if k in dense}
    if not qwen3:
        kwargs["shared_expert_intermediate_size"] = 0
    cfg = (Qwen3MoeConfig if qwen3 else Qwen2MoeConfig)(
        num_experts=num_experts,
        num_experts_per_tok=top_k,
        intermediate_size=dense["intermediate_size"],
        moe_intermediate_size=dense["intermediate_size"],
        decoder_sparse_step=1,
        mlp_only_layers=[],
        norm_topk_prob=True,
        router_aux_loss_coef=aux_coef,
        output_router_logits=False,
        **kwargs,
    )
    cfg.architectures = [LAYOUTS[dense["model_type"]].architecture]
    cfg.dtype = dense.get("dtype", dense.get("torch_dtype", "float32")) if dtype == "auto" else dtype
    return cfg


def moe_config(dense: dict[str, Any], num_experts: int, top_k: int, aux_coef: float, dtype: str) -> Any:
    """The stock MoE config of the merged model for the experts' family (Mixtral or Qwen-MoE)."""
    build = mixtral_config if LAYOUTS[dense["model_type"]] is MIXTRAL else qwen_moe_config
    return build(dense, num_experts, top_k, aux_coef, dtype)
