import logging


def _not_the_torchvision_fallback(record: logging.LogRecord) -> bool:
    return "requires torchvision (not installed); falling back to" not in record.getMessage()


# diffusers' Stable Diffusion pipelines (imported below) import transformers' CLIP and SigLIP image processors.
# Without torchvision, which nothing here needs, transformers then says on every import that it falls back to
# their PIL versions (the ones it used before). Only that notice is dropped, on the one transformers logger that
# emits it; transformers' other messages and its verbosity stay as the user set them.
logging.getLogger("transformers.utils.import_utils").addFilter(_not_the_torchvision_fallback)

from .pipeline_neuroimagen import NeuroImagenPipeline, NeuroImagenPipelineOutput  # noqa: E402

__all__ = ["NeuroImagenPipeline", "NeuroImagenPipelineOutput"]
