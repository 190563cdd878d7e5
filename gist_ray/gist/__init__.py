"""The Gist token and the wrapper that returns ``(cls_logits, gist_logits)``."""

from gist_ray.gist.model import GistModel, GistToken

__all__ = ["GistModel", "GistToken"]
