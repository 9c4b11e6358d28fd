"""Stand-in for torchvision.models: no models; list_models() finds none."""

from ._placeholder import module_getattr

segmentation = None


def list_models(module=None, include=None, exclude=None):
    return []


__getattr__ = module_getattr(__name__)
