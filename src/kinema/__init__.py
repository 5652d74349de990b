"""Kinema: open text-to-video.

A latent diffusion transformer on spacetime patches of a causal video VAE,
trained with rectified flow and sampled with classifier-free guidance.

    from kinema import Pipeline, Request
    pipe = Pipeline.load()
    pipe.save(pipe.generate(Request("a red ball bounces over a snowy field", seconds=2)), "ball.mp4")
"""

from kinema.errors import KinemaError

__version__ = "0.1.0"
__all__ = ["KinemaError", "Pipeline", "Request", "Video", "__version__"]
_LAZY = {"Pipeline", "Request", "Video"}  # from kinema.pipeline, which imports torch: only when first asked for


def __getattr__(name: str):
    if name in _LAZY:
        from kinema import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'kinema' has no attribute {name!r}")
