"""Kinema: open text-to-video.

A latent diffusion transformer on spacetime patches of a causal video VAE,
trained with rectified flow and sampled with classifier-free guidance.
"""

from kinema.errors import KinemaError

__version__ = "0.1.0"
__all__ = ["KinemaError", "__version__"]
