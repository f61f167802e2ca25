"""NeuroImagen: reconstruct the image a person saw from their EEG (after Lan et al., 2023)."""

__version__ = "0.1.0"
__all__ = ["NeuroImagenPipeline", "NeuroImagenPipelineOutput"]


def __getattr__(name: str):
    # Lazy: `import neuroimagen.data` must not pay for diffusers.
    if name in __all__:
        from . import pipelines

        return getattr(pipelines, name)
    raise AttributeError(f"module 'neuroimagen' has no attribute {name!r}")
