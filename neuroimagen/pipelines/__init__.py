from .pipeline_neuroimagen import NeuroImagenPipeline, NeuroImagenPipelineOutput

__all__ = ["NeuroImagenPipeline", "NeuroImagenPipelineOutput"]
