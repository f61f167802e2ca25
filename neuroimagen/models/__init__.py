"""The EEG-side models (one per file) and the evaluation's image classifier."""

from .caption_bank import CaptionBank
from .classifier import ImageClassifier
from .eeg_encoder import EEGEncoder
from .layout_prior import LayoutPrior
from .saliency import SaliencyDiscriminator, SaliencyGenerator
from .semantic_decoder import SemanticDecoder

__all__ = ["CaptionBank", "EEGEncoder", "ImageClassifier", "LayoutPrior", "SaliencyDiscriminator", "SaliencyGenerator",
           "SemanticDecoder"]
