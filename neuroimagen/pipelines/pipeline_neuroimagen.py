"""NeuroImagenPipeline: EEG in; saliency map, decoded caption and reconstruction out.

After Lan et al. 2023, "Seeing through the Brain: Image Reconstruction of Visual Perception from Human
Brain Signals" (arXiv 2308.02510): a pixel-level saliency map from an EEG encoder + GAN generator sets
the layout and colour, a sample-level caption embedding decoded from the EEG sets the meaning, and a
latent diffusion model joins them by img2img (init = saliency map, condition = caption).

The last stage is diffusers' own ``StableDiffusionImg2ImgPipeline`` (``StableDiffusionPipeline`` for
the caption-only ablation) built from this pipeline's ``vae``/``unet``/``scheduler``: the embedded
``neuroimagen-tiny`` model conditions it on 384-d MiniLM states through ``prompt_embeds``; with
``sd_model=...`` the same call runs Stable Diffusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AsymmetricAutoencoderKL,
    AutoencoderKL,
    DiffusionPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput, replace_example_docstring

from .._check import check_option, check_range, validate_type

CAPTION_SOURCES = ("predicted", "label", "detailed")
MODES = ("both", "saliency_only", "caption_only")
OUTPUT_TYPES = ("pil", "np", "pt")
# Relative RMS error of a text encoder's states to the caption bank's that still matches: float16 and bfloat16 copies
# of the same weights stay well inside (8e-4 and 6e-3 measured on a tiny random CLIP), other weights are far outside
# (about 1).
MATCH_TOLERANCE = 0.05

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from neuroimagen import NeuroImagenPipeline
        >>> from neuroimagen.data import preprocess, read_trial

        >>> pipe = NeuroImagenPipeline.from_pretrained("checkpoints/neuroimagen-tiny")
        >>> trial = preprocess(read_trial("examples/n02124075_0002_s6.npz"))  # into the model's space
        >>> out = pipe(trial, generator=torch.Generator().manual_seed(0))
        >>> out.images[0].save("reconstruction.png")
        >>> out.captions[0][0]  # the top caption and its probability
        ```
"""


# The reconstruction's defaults (the app's sliders start at them; the benchmark and the evaluation use them).
# Strength 0.5 (0.75 before 2026-12-02): see ``__call__``.
DEFAULT_STRENGTH, DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS = 0.5, 5.0, 25


def min_inference_steps(strength: float) -> int:
    """The fewest ``num_inference_steps`` that give img2img at least one denoising step at ``strength``.

    img2img (diffusers' ``get_timesteps``) runs ``int(num_inference_steps * strength)`` steps, e.g. none for
    1 step at strength 0.75: this is the smallest ``n`` with ``int(n * strength) >= 1`` (float products included).
    """
    check_range("strength", strength, 0.0, 1.0, low_inclusive=False)
    n = max(1, int(np.ceil(1.0 / strength)))
    while int(n * strength) < 1:
        n += 1
    return n


def load_stable_diffusion(sd_model: str | Path, torch_dtype: torch.dtype | None = None) -> dict:
    """The latent diffusion components of a Stable Diffusion img2img model (hub id or folder): ``vae``, ``unet``,
    ``scheduler`` (its config as DDIM), ``text_encoder`` and ``tokenizer``; no safety checker."""
    from diffusers import DDIMScheduler

    sd = StableDiffusionImg2ImgPipeline.from_pretrained(
        sd_model, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        **({"torch_dtype": torch_dtype} if torch_dtype is not None else {}))
    return {"vae": sd.vae, "unet": sd.unet, "scheduler": DDIMScheduler.from_config(sd.scheduler.config),
            "text_encoder": sd.text_encoder, "tokenizer": sd.tokenizer}


@dataclass
class NeuroImagenPipelineOutput(BaseOutput):
    """What one call returns, per trial of the batch.

    Attributes
    ----------
    images : list of PIL.Image | ndarray, shape (batch, H, W, 3) | Tensor, shape (batch, 3, H, W)
        The reconstructions.
    saliency_maps : same type as ``images``
        The decoded pixel-level saliency maps: the saliency generator's own, at its resolution.
    start_images : same type as ``images``
        The maps img2img starts from (before resizing to the diffusion model's size): the saliency maps with the
        decoded class's object template drawn in by the layout prior (on the map's mean colour instead of the map
        when the prior's ``background`` is ``"flat"``), or the saliency maps themselves when no template was drawn
        (no layout prior, ``layout_weight=0``, ``mode="caption_only"``).
    captions : list of list of (str, float)
        Top-k label captions with their probabilities (``class_probs``): the first is the decoded class's.
    detailed_captions : list of list of (str, float)
        Top-k detailed captions of the caption bank with their similarity.
    class_probs : ndarray, shape (batch, n_classes)
        Class probabilities in the order of ``neuroimagen.data.classes.CLASSES``: the ``class_decoder``'s (its CNN
        combined with the caption readout) when the checkpoint has one, else the semantic readout's.
    prompt_embeds : Tensor, shape (batch, L, D)
        The cross-attention condition used (zeros for ``mode="saliency_only"``).
    caption_used : list of str
        The caption text the condition stands for.
    notes : list of str
        Anything the user should know about how this output was made.
    confidence : ndarray, shape (batch,) | None
        Calibrated probability in [0, 1] that the top class is right (``decoding_check``; None without one).
    in_distribution : ndarray of bool, shape (batch,) | None
        False when the EEG is unlike the training trials (``ood_score > ood_threshold``): the image is then the
        model's guess for its top class, not a reconstruction. None without a ``decoding_check``.
    ood_score : ndarray, shape (batch,) | None
        Distance to the training trials in units of its spread on validation trials (higher: more foreign).
    ood_threshold : float | None
        The largest ``ood_score`` still in distribution (it accepts 95 % of the validation trials).
    """

    images: list | np.ndarray | torch.Tensor
    saliency_maps: list | np.ndarray | torch.Tensor
    captions: list[list[tuple[str, float]]]
    detailed_captions: list[list[tuple[str, float]]]
    class_probs: np.ndarray
    prompt_embeds: torch.Tensor
    caption_used: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    confidence: np.ndarray | None = None
    in_distribution: np.ndarray | None = None
    ood_score: np.ndarray | None = None
    ood_threshold: float | None = None
    start_images: list | np.ndarray | torch.Tensor | None = None


class NeuroImagenPipeline(DiffusionPipeline):
    r"""Reconstruct the image a person saw from one or more EEG trials.

    Parameters
    ----------
    eeg_encoder : neuroimagen.models.EEGEncoder
        f(x): the triplet-trained EEG feature extractor.
    saliency_generator : neuroimagen.models.SaliencyGenerator
        G(z, f) -> saliency map in [-1, 1].
    semantic_decoder : neuroimagen.models.SemanticDecoder
        h(x) -> caption states, shape (batch, n_targets, L, D).
    caption_bank : neuroimagen.models.CaptionBank
        Caption texts and states for the readout (top-k captions, class probabilities, empty caption).
    vae : AutoencoderKL | AsymmetricAutoencoderKL
        The embedded model's is an ``AutoencoderKL``; an ``AsymmetricAutoencoderKL`` with the same encoder and a
        wider decoder (training stage ``decoder``) works too: only ``encode`` and ``decode(z)`` are used.
    unet : UNet2DConditionModel
    scheduler : diffusers scheduler (DDIM for the embedded model)
    text_encoder, tokenizer : transformers models | None
        Only in full mode (Stable Diffusion). When the semantic decoder was trained against this very text encoder
        (:meth:`text_encoder_mismatch`), the decoded states condition the UNet directly; otherwise the decoded
        caption's text is encoded by them.
    layout_prior : neuroimagen.models.LayoutPrior | None
        Optional: the decoded class's object template, drawn into the saliency map at the object box decoded
        from the EEG before img2img (``layout_weight``).
    decoding_check : neuroimagen.models.DecodingCheck | None
        Optional: the calibrated ``confidence`` and the in-distribution test of the output.
    class_decoder : neuroimagen.models.ClassDecoder | None
        Optional: the decoded class from a CNN trained for the class, combined with the caption readout
        (:meth:`decode_class`); without one the class is the caption readout's.
    """

    model_cpu_offload_seq = "eeg_encoder->semantic_decoder->unet->vae"
    _optional_components = ["text_encoder", "tokenizer", "layout_prior", "decoding_check", "class_decoder"]

    def __init__(self, eeg_encoder, saliency_generator, semantic_decoder, caption_bank,
                 vae: AutoencoderKL | AsymmetricAutoencoderKL, unet: UNet2DConditionModel, scheduler,
                 text_encoder=None, tokenizer=None, layout_prior=None, decoding_check=None, class_decoder=None):
        super().__init__()
        self.register_modules(eeg_encoder=eeg_encoder, saliency_generator=saliency_generator,
                              semantic_decoder=semantic_decoder, caption_bank=caption_bank, vae=vae, unet=unet,
                              scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer,
                              layout_prior=layout_prior, decoding_check=decoding_check,
                              class_decoder=class_decoder)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self._stages: dict[str, tuple[tuple, DiffusionPipeline]] = {}

    # ----------------------------------------------------------------------------------------------
    # Loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, sd_model: str | Path | None = None,
                        **kwargs) -> NeuroImagenPipeline:
        """Load a NeuroImagen folder; with ``sd_model`` (hub id or local folder) swap in Stable Diffusion.

        The EEG models and the caption bank always come from ``pretrained_model_name_or_path``; with
        ``sd_model`` the vae, unet, scheduler (as DDIM), text encoder and tokenizer come from that
        Stable Diffusion img2img model.
        """
        from .. import models  # noqa: F401  (diffusers finds custom component classes only among imported modules)

        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if sd_model is not None:
            pipe.swap_diffusion_model(sd_model, torch_dtype=kwargs.get("torch_dtype"))
        return pipe

    def swap_diffusion_model(self, sd_model: str | Path, torch_dtype: torch.dtype | None = None) -> None:
        """Replace the latent diffusion stage by a Stable Diffusion model (hub id or folder).

        A semantic decoder trained against this model's own text encoder (training config ``semantic.text_encoder``
        naming it) then conditions it on the decoded states themselves (the paper's L + I); any other is
        conditioned through the decoded caption's text, and the output's ``notes`` say why
        (:meth:`text_encoder_mismatch`).
        """
        self.register_modules(**load_stable_diffusion(sd_model, torch_dtype))

    # ----------------------------------------------------------------------------------------------
    # EEG contract
    @property
    def eeg_ch_names(self) -> list[str] | None:
        return self.eeg_encoder.config.ch_names

    @property
    def eeg_sfreq(self) -> float:
        return float(self.eeg_encoder.config.sfreq)

    @property
    def eeg_shape(self) -> tuple[int, int]:
        return int(self.eeg_encoder.config.n_chans), int(self.eeg_encoder.config.n_times)

    @property
    def eeg_tmin(self) -> float:
        """Seconds from stimulus onset to the first sample the models see (0.02 before the config recorded it)."""
        return float(getattr(self.eeg_encoder.config, "tmin", 0.02))

    @property
    def eeg_preprocess_kwargs(self) -> dict:
        """:func:`~neuroimagen.data.preprocess` arguments that bring a recording into this model's space: its own
        channels (a model of any montage), rate and window, e.g. ``preprocess(trial, **pipe.eeg_preprocess_kwargs)``."""
        from ..data.montage import model_ch_names

        n_chans, n_times = self.eeg_shape
        names = self.eeg_ch_names
        if names is None:
            if n_chans != len(model_ch_names()):
                raise ValueError(f"This model's EEG encoder names none of its {n_chans} channels: recordings cannot be "
                                 f"mapped onto them (retrain it on a data file with 'ch_names').")
            names = list(model_ch_names())
        start = round(self.eeg_tmin * self.eeg_sfreq)
        return {"ch_names": list(names), "sfreq": self.eeg_sfreq, "crop": (start, start + n_times)}

    @property
    def uses_text_encoder(self) -> bool:
        """True when the condition goes through the diffusion model's own text encoder: full mode with a text
        encoder that does not match the semantic decoder's (:meth:`text_encoder_mismatch`)."""
        return self.text_encoder_mismatch() is not None

    @torch.no_grad()
    def text_encoder_mismatch(self) -> str | None:
        """Why the diffusion model's text encoder does not match the semantic decoder's, or None when it matches
        (or there is none: the embedded model is conditioned on the caption bank's states directly).

        Matching means the decoded states can be fed to the UNet as they are: the caption bank and the decoder
        were made with this very encoder. Decided by what can be checked without the training run:

        1. the shapes and kind: the text encoder's ``model_type``, its width (``hidden_size``) and the
           tokenizer's ``model_max_length`` equal the caption bank's ``text_encoder_type``, ``hidden_dim`` and
           ``seq_len``; the semantic decoder's ``seq_len`` x ``hidden_dim`` are the bank's, and the UNet's
           ``cross_attention_dim`` is that width;
        2. a fingerprint: the caption bank stores the exact states of the empty caption and of the first label
           caption; the text encoder must give them again (relative RMS error <= ``MATCH_TOLERANCE``, which
           float16 and bfloat16 copies meet). Two encoders of the same architecture with other weights (a
           fine-tuned CLIP, another model's) fail here; the same one stored in another dtype or format passes,
           and so do SD models that share one text encoder (SD 1.4 and 1.5 share CLIP ViT-L/14's).

        The answer is kept until a component is replaced or the text encoder moved to another dtype or device.
        """
        parts = (self.text_encoder, self.tokenizer, self.caption_bank, self.semantic_decoder, self.unet)
        key = (*(id(m) for m in parts), *((self.text_encoder.dtype, self.text_encoder.device)
                                          if self.text_encoder is not None else ()))
        cached = getattr(self, "_text_match", None)
        if cached is None or cached[0] != key:
            self._text_match = (key, self._find_text_mismatch())
        return self._text_match[1]

    def _find_text_mismatch(self) -> str | None:
        te, tok, bank, dec = self.text_encoder, self.tokenizer, self.caption_bank, self.semantic_decoder
        if te is None:
            return None
        ours = (bank.config.text_encoder_type, bank.seq_len, bank.hidden_dim)
        theirs = (getattr(te.config, "model_type", None), getattr(tok, "model_max_length", None),
                  getattr(te.config, "hidden_size", None))
        name = bank.config.get("text_encoder") or "its training text encoder"
        if ours != theirs:
            return (f"the caption bank holds {ours[0]} states of {ours[1]} x {ours[2]} ({name}), this diffusion model's "
                    f"text encoder gives {theirs[0]} states of {theirs[1]} x {theirs[2]}")
        if (dec.config.seq_len, dec.config.hidden_dim) != ours[1:] or self.unet.config.cross_attention_dim != ours[2]:
            return (f"the semantic decoder gives {dec.config.seq_len} x {dec.config.hidden_dim} states and the UNet "
                    f"attends to {self.unet.config.cross_attention_dim}-wide ones, the caption bank's are "
                    f"{ours[1]} x {ours[2]}")
        stored = torch.cat([bank.empty_state[:1], bank.label_bank[:1]]).float()
        computed = self._encode_text(["", *bank.config.label_texts[:1]]).float().to(stored.device)
        err = float((computed - stored).pow(2).mean().sqrt() / stored.pow(2).mean().sqrt().clamp_min(1e-12))
        if not err <= MATCH_TOLERANCE:
            return (f"same architecture ({ours[0]}, {ours[1]} x {ours[2]}) but other weights: its states for the empty "
                    f"and the first label caption differ from those the caption bank stores ({name}) by a relative "
                    f"error of {err:.3g} (a match is at most {MATCH_TOLERANCE:g})")
        return None

    @property
    def default_layout_weight(self) -> float:
        """The ``layout_weight`` of a call that gives none: the layout prior's ``default_weight``, 0 without one."""
        prior = getattr(self, "layout_prior", None)
        return 0.0 if prior is None else float(prior.config.default_weight)

    # ----------------------------------------------------------------------------------------------
    def check_inputs(self, eeg, strength, guidance_scale, num_inference_steps, caption_source, mode, output_type,
                     generator, top_k, layout_weight=None) -> None:
        """Raise a ``ValueError`` or ``TypeError`` that says how to fix the first invalid argument."""
        if layout_weight is not None:
            check_range("layout_weight", layout_weight, 0.0)
            if layout_weight > 0 and getattr(self, "layout_prior", None) is None:
                raise ValueError(f"layout_weight={layout_weight} needs a layout_prior component, and this pipeline "
                                 f"has none: pass layout_weight=0 (or None), or load a folder with a layout_prior.")
        check_range("strength", strength, 0.0, 1.0, low_inclusive=False)
        check_range("guidance_scale", guidance_scale, 0.0)
        validate_type("num_inference_steps", num_inference_steps, int)
        check_range("num_inference_steps", num_inference_steps, 1, 1000)
        check_range("top_k", top_k, 1)
        check_option("caption_source", caption_source, CAPTION_SOURCES)
        check_option("mode", mode, MODES)
        check_option("output_type", output_type, OUTPUT_TYPES)
        if mode != "caption_only" and int(num_inference_steps * strength) < 1:
            # img2img runs int(steps * strength) steps; with none, diffusers fails with a reshape error.
            raise ValueError(f"Invalid value for the 'num_inference_steps' parameter: img2img runs "
                             f"int(num_inference_steps * strength) denoising steps and needs at least one denoising "
                             f"step, so at strength={strength:g} num_inference_steps must be at least "
                             f"{min_inference_steps(strength)}, but got {num_inference_steps} (int({num_inference_steps}"
                             f" * {strength:g}) = 0). Raise 'num_inference_steps' or 'strength'.")
        batch = self._check_eeg(eeg)
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch} trials: pass one generator "
                             f"or exactly one per trial.")

    def _check_eeg(self, eeg) -> int:
        """Raise unless ``eeg`` is preprocessed EEG in the model's space; return its batch size."""
        from ..data.io import EEGTrial  # the data layer (MNE) loads only when a call needs it

        if isinstance(eeg, list | tuple) and eeg and isinstance(eeg[0], EEGTrial):
            return sum(self._check_eeg(t) for t in eeg)
        if isinstance(eeg, EEGTrial):
            if not eeg.info.get("preprocessed", False):
                raise ValueError("This EEGTrial was not preprocessed: call neuroimagen.data.preprocess(trial) first "
                                 "(it maps the channels, resamples, filters and crops to the model's space).")
            eeg = eeg.data
        validate_type("eeg", eeg, (np.ndarray, torch.Tensor, EEGTrial), "EEGTrial, numpy array or torch tensor")
        x = self._eeg_to_tensor(eeg)
        n_chans, n_times = self.eeg_shape
        if x.ndim != 3 or tuple(x.shape[1:]) != (n_chans, n_times):
            raise ValueError(f"Invalid EEG shape: expected (n_chans, n_times) = ({n_chans}, {n_times}) or "
                             f"(batch, {n_chans}, {n_times}) in the model's space, but got {tuple(x.shape)}. "
                             f"Use neuroimagen.data.read_trial + preprocess for recordings.")
        if not torch.isfinite(x).all():
            raise ValueError(f"The EEG contains {int((~torch.isfinite(x)).sum())} NaN or infinite values.")
        return len(x)

    @staticmethod
    def _eeg_to_tensor(eeg) -> torch.Tensor:
        """EEG (checked by ``check_inputs``) as a float tensor, shape (batch, n_chans, n_times)."""
        if isinstance(eeg, list | tuple):  # of EEGTrial
            return torch.cat([NeuroImagenPipeline._eeg_to_tensor(t) for t in eeg])
        if not isinstance(eeg, np.ndarray | torch.Tensor):  # an EEGTrial
            eeg = eeg.data
        x = torch.as_tensor(np.asarray(eeg) if isinstance(eeg, np.ndarray) else eeg).float()
        return x[None] if x.ndim == 2 else x

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        eeg,
        strength: float = DEFAULT_STRENGTH,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        num_inference_steps: int = DEFAULT_STEPS,
        generator: torch.Generator | list[torch.Generator] | None = None,
        caption_source: str = "label",
        mode: str = "both",
        top_k: int = 5,
        output_type: str = "pil",
        return_dict: bool = True,
        layout_weight: float | None = None,
    ) -> NeuroImagenPipelineOutput | tuple:
        r"""Reconstruct the seen image(s).

        Parameters
        ----------
        eeg : EEGTrial | ndarray, shape (n_chans, n_times) | ndarray, shape (batch, n_chans, n_times) | Tensor
            Preprocessed EEG in the model's space (``neuroimagen.data.preprocess``), or a list of EEGTrial.
        strength : float
            How much of the saliency map is noised away, in (0, 1]; 1 keeps none of it. The default, 0.5, was
            chosen for the embedded checkpoint by blind naming on validation trials (``docs/EXPERIMENTS.md``):
            started from the layout prior's sharp template, the tiny UNet redraws less of it at 0.3-0.5 than at
            0.75, and the object is named more often.
        guidance_scale : float
            Classifier-free guidance on the caption; <= 1 disables it.
        num_inference_steps : int
            Denoising steps before ``strength`` is applied (img2img runs ``int(steps * strength)``).
        generator : torch.Generator | list of torch.Generator | None
            One generator, or one per trial (then a batch equals the same trials run one by one).
        caption_source : str
            ``"label"`` (default: the exact label-caption states of the top-1 decoded class, i.e. of the
            caption returned first in ``captions``), ``"predicted"`` (the semantic decoder's regressed
            label-caption states as they come, the paper's L) or ``"detailed"`` (decoded detailed-caption
            states, the paper's B). The regressed states are shrunk towards the mean caption (MSE), and the
            tiny checkpoint's UNet draws the class from them far less often than from the exact states (its
            model card and ``reports/`` measure both: rows L + I and L* + I).
        mode : str
            ``"both"`` (the paper's full model), ``"saliency_only"`` (no caption condition) or
            ``"caption_only"`` (start from noise, no saliency map).
        top_k : int
            How many captions to return per trial.
        output_type : str
            ``"pil"``, ``"np"`` or ``"pt"``.
        return_dict : bool
            Return a :class:`NeuroImagenPipelineOutput` (else a tuple of its fields).
        layout_weight : float | None
            Opacity (times the template's coverage) of the decoded class's object template, drawn into the
            saliency map at the box decoded from the EEG (``layout_prior``; 0: the generator's map alone; with the
            prior's ``background="flat"``, any weight > 0 draws on the map's mean colour instead of the map). None:
            the layout prior's ``default_weight``, or 0 when the pipeline has no layout prior.

        Examples:
        """
        # 1. Check inputs
        self.check_inputs(eeg, strength, guidance_scale, num_inference_steps, caption_source, mode, output_type,
                          generator, top_k, layout_weight)
        device = self._execution_device
        x = self._eeg_to_tensor(eeg).to(device=device, dtype=self.eeg_encoder.dtype)
        batch = len(x)
        generators = self._per_trial_generators(generator, batch)
        notes: list[str] = []

        # 2. Encode the EEG: features and caption states
        features = self.eeg_encoder(x)
        states = self.semantic_decoder(x).float()

        # 3. Decode the class: top-k captions and class probabilities
        readout = self.decode_class(x, states, k=top_k)
        class_probs = readout["class_probs"]
        top_class = class_probs.argmax(-1)
        check = self._check_decoding(features, x, class_probs, notes)

        # 4. Prepare the start image: the saliency map, with the decoded class's object template drawn in
        if layout_weight is None:
            layout_weight = self.default_layout_weight
        image_size = self.unet.config.sample_size * self.vae_scale_factor
        saliency, start, init_image = self.prepare_init_image(
            features, x, generators, top_class, 0.0 if mode == "caption_only" else layout_weight, image_size, notes)

        # 5. Encode the condition (prompt embeddings) and the caption text it stands for
        prompt_embeds, negative_embeds, caption_used = self.encode_condition(
            readout, states, top_class, caption_source, mode, notes)
        if mode == "saliency_only":
            guidance_scale = 0.0  # no caption condition at all

        # 6. Latent diffusion: img2img from the saliency map, or text-to-image from noise
        if mode == "caption_only":
            notes.append("Caption only: the reconstruction starts from noise, not from the saliency map.")
            images = self._diffusion_stage("txt2img")(
                prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, height=image_size,
                width=image_size, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                generator=generators, output_type="pt").images
        else:
            images = self._diffusion_stage("img2img")(
                image=init_image, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds,
                strength=strength, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                generator=generators, output_type="pt").images

        # 7. Post-process: the diffusion stage's images are in [0, 1] already, the maps in [-1, 1]
        images = self.image_processor.postprocess(images.float().cpu(), output_type, do_denormalize=[False] * batch)
        saliency_maps = self.image_processor.postprocess(saliency.cpu(), output_type)
        start_images = self.image_processor.postprocess(start.cpu(), output_type)
        out = NeuroImagenPipelineOutput(
            images=images, saliency_maps=saliency_maps, captions=readout["captions"],
            detailed_captions=readout["detailed_captions"], class_probs=class_probs.cpu().numpy(),
            prompt_embeds=prompt_embeds.cpu(), caption_used=caption_used, notes=notes, **check,
            start_images=start_images)
        self.maybe_free_model_hooks()
        return out if return_dict else tuple(out.values())

    @torch.no_grad()
    def decode_class(self, x: torch.Tensor, states: torch.Tensor | None = None, k: int = 5) -> dict:
        """The decoded class of EEG ``x`` (batch, n_chans, n_times): the caption bank's readout, with the class
        probabilities (and the label captions ranked by them) from the ``class_decoder`` when there is one.

        Parameters
        ----------
        x : Tensor
            The EEG, on the execution device in the EEG models' dtype.
        states : Tensor, shape (batch, n_targets, L, D) | None
            The semantic decoder's states of ``x`` (None: computed here).
        k : int
            Captions to return per trial.

        Returns
        -------
        readout : dict
            As :meth:`~neuroimagen.models.CaptionBank.readout`: ``class_probs`` (batch, n_classes), ``captions``
            (top-k label captions and their probabilities), ``detailed_captions``.
        """
        if states is None:
            states = self.semantic_decoder(x).float()
        readout = self.caption_bank.readout(states, k=k, targets=self.semantic_decoder.config.targets)
        decoder = getattr(self, "class_decoder", None)
        if decoder is None:
            return readout
        if decoder.n_classes != self.caption_bank.n_classes:
            raise ValueError(f"The class decoder names {decoder.n_classes} classes but the caption bank has "
                             f"{self.caption_bank.n_classes}: they must come from the same training run.")
        probs = decoder.class_probs(x.to(decoder.dtype), readout["class_probs"])
        p, i = probs.topk(min(k, probs.shape[1]), dim=-1)
        texts = self.caption_bank.config.label_texts
        readout["captions"] = [[(texts[j], round(float(q), 4)) for q, j in zip(pr, ir)] for pr, ir in zip(p, i)]
        readout["class_probs"] = probs
        return readout

    def prepare_init_image(self, features, x, generators, top_class, layout_weight, image_size,
                           notes: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The saliency maps, the start images made from them and the img2img init.

        Parameters
        ----------
        features : Tensor, shape (batch, n_features)
            The EEG encoder's features.
        x : Tensor, shape (batch, n_chans, n_times)
            The EEG (the layout prior decodes the object box from it).
        generators : list of torch.Generator
            One per trial: the generator's noise.
        top_class : Tensor, shape (batch,)
            The decoded class, whose object template the layout prior draws.
        layout_weight : float
            The template's opacity; 0 leaves the generator's map as it is.
        image_size : int
            The diffusion model's image size.
        notes : list of str
            Gets a note when the layout prior was used.

        Returns
        -------
        saliency : Tensor, shape (batch, 3, h, w)
            The generator's saliency maps in [-1, 1], at its resolution.
        start : Tensor, shape (batch, 3, h, w)
            The same maps with the decoded class's template drawn in (``layout_weight > 0``), else ``saliency``.
        init_image : Tensor, shape (batch, 3, image_size, image_size)
            ``start`` in [0, 1], resized for img2img.
        """
        device = features.device
        noise_dim = self.saliency_generator.config.noise_dim
        z = torch.stack([torch.randn(noise_dim, generator=g) for g in generators]).to(device, features.dtype)
        saliency = self.saliency_generator(features, z).clamp(-1, 1).float()
        start = saliency
        if layout_weight > 0:
            boxes = self.layout_prior.boxes(features.float(), x.float())
            start = self.layout_prior.composite(saliency, top_class.to(device), boxes, layout_weight)
            flat = getattr(self.layout_prior.config, "background", "saliency") == "flat"
            notes.append(f"Layout prior (weight {layout_weight:g}): the decoded class's object template was drawn into "
                         f"the start image (the saliency map the diffusion starts from"
                         f"{', reduced to its mean colour' if flat else ''}) at the object box decoded from the EEG.")
        init = F.interpolate(start, size=(image_size, image_size), mode="bilinear", align_corners=False)
        return saliency, start, (init + 1) / 2

    def encode_condition(self, readout: dict, states, top_class, caption_source: str, mode: str,
                         notes: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """The cross-attention condition, its unconditional counterpart and the caption text it stands for.

        Parameters
        ----------
        readout : dict
            The caption bank's readout of ``states`` (``captions``, ``detailed_captions``).
        states : Tensor, shape (batch, n_targets, L, D)
            The semantic decoder's caption states.
        top_class : Tensor, shape (batch,)
            The decoded class.
        caption_source, mode : str
            As in ``__call__``; ``mode="saliency_only"`` gives the unconditional embeddings and no caption.
        notes : list of str
            In full mode, says whether the states condition Stable Diffusion directly (its text encoder matches the
            semantic decoder's, :meth:`text_encoder_mismatch`) or the caption's text goes through its text encoder.

        Returns
        -------
        prompt_embeds, negative_embeds : Tensor, shape (batch, L, D)
            On the execution device, in the UNet's dtype.
        caption_used : list of str
        """
        batch = len(states)
        targets = list(self.semantic_decoder.config.targets)
        if caption_source == "label":
            prompt_embeds = self.caption_bank.label_states(top_class)
            caption_used = [readout["captions"][i][0][0] for i in range(batch)]
        else:
            kind = "label" if caption_source == "predicted" else "detailed"
            prompt_embeds = states[:, targets.index(kind)]
            caption_used = [readout["captions" if kind == "label" else "detailed_captions"][i][0][0]
                            for i in range(batch)]
        negative_embeds = self.caption_bank.empty_states(batch)
        mismatch = self.text_encoder_mismatch()
        if mismatch is not None:
            prompt_embeds = self._encode_text(caption_used)
            negative_embeds = self._encode_text([""] * batch)
            notes.append(f"The semantic decoder was trained against another text encoder than this diffusion model's "
                         f"({mismatch}): the decoded caption's text is conditioned through the model's own text "
                         f"encoder.")
        elif self.text_encoder is not None and mode != "saliency_only":
            notes.append("The semantic decoder was trained against this diffusion model's own text encoder: the "
                         + ("decoded" if caption_source != "label" else "decoded class's exact label-caption")
                         + " states condition it directly (prompt_embeds), with no text re-encoding.")
        if mode == "saliency_only":
            prompt_embeds, caption_used = negative_embeds, [""] * batch
            notes.append("Saliency only: the reconstruction is not conditioned on a caption.")
        device = self._execution_device
        return prompt_embeds.to(device, self.unet.dtype), negative_embeds.to(device, self.unet.dtype), caption_used

    def _check_decoding(self, features, x, class_probs, notes: list[str]) -> dict:
        """``confidence``, ``in_distribution``, ``ood_score`` and ``ood_threshold`` from the decoding check; all
        None (and a note) without one."""
        check = getattr(self, "decoding_check", None)
        if check is None:
            notes.append("No decoding check in this checkpoint: confidence and in_distribution are not available "
                         "(None); the class probabilities are not calibrated and foreign EEG is not detected.")
            return {}
        r = {k: v.cpu().numpy() for k, v in check(features.float(), x.float(), class_probs).items()}
        n_out = int((~r["in_distribution"]).sum())
        if n_out:
            notes.append(f"{n_out} of {len(x)} trial(s) out of distribution (ood_score above {check.config.threshold:g}): "
                         f"the model has not seen EEG like this; the picture is its guess for the top class, not a "
                         f"reconstruction.")
        return {**r, "ood_threshold": float(check.config.threshold)}

    # ----------------------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @staticmethod
    def _per_trial_generators(generator, batch: int) -> list[torch.Generator]:
        if isinstance(generator, list):
            return generator
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        if batch == 1:
            return [generator]
        # One generator for a batch: derive one per trial from it, so trials get independent noise.
        seeds = torch.randint(0, 2**62, (batch,), generator=generator).tolist()
        return [torch.Generator().manual_seed(int(s)) for s in seeds]

    def _diffusion_stage(self, kind: str) -> DiffusionPipeline:
        """diffusers' img2img (``kind="img2img"``) or text-to-image pipeline on this pipeline's components.

        Built once and kept; built again only when a component was replaced (``swap_diffusion_model``).
        """
        parts = {"vae": self.vae, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer, "unet": self.unet,
                 "scheduler": self.scheduler}
        key = tuple(id(m) for m in parts.values())
        if kind not in self._stages or self._stages[kind][0] != key:
            cls = StableDiffusionImg2ImgPipeline if kind == "img2img" else StableDiffusionPipeline
            stage = cls(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            self._stages[kind] = (key, stage)
        stage = self._stages[kind][1]
        stage.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        return stage

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        """The diffusion model's text encoder's states of ``texts``, as Stable Diffusion's ``encode_prompt``."""
        from ..data.captions import encode_clip

        return encode_clip(self.tokenizer, self.text_encoder, texts)
