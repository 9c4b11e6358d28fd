"""Stand-in for torchvision.transforms: every transform is a placeholder class."""

from ._placeholder import make, module_getattr

Compose = make(__name__ + ".Compose")
Resize = make(__name__ + ".Resize")
CenterCrop = make(__name__ + ".CenterCrop")
RandomCrop = make(__name__ + ".RandomCrop")
RandomResizedCrop = make(__name__ + ".RandomResizedCrop")
RandomHorizontalFlip = make(__name__ + ".RandomHorizontalFlip")
ToTensor = make(__name__ + ".ToTensor")
Normalize = make(__name__ + ".Normalize")

__getattr__ = module_getattr(__name__)
