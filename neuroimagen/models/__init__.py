"""The EEG-side models (one per file) and the evaluation's image classifier."""

from .caption_bank import CaptionBank
from .class_decoder import ClassDecoder
from .classifier import ImageClassifier
from .decoding_check import DecodingCheck
from .eeg_encoder import EEGEncoder
from .layout_prior import LayoutPrior
from .saliency import SaliencyDiscriminator, SaliencyGenerator
from .semantic_decoder import SemanticDecoder

__all__ = ["CaptionBank", "ClassDecoder", "DecodingCheck", "EEGEncoder", "ImageClassifier", "LayoutPrior", "SaliencyDiscriminator", "SaliencyGenerator",
           "SemanticDecoder"]
