"""Stand-in for torchvision.datasets: every dataset is a placeholder class."""

from ._placeholder import make, module_getattr

ImageFolder = make(__name__ + ".ImageFolder")
CIFAR10 = make(__name__ + ".CIFAR10")
CIFAR100 = make(__name__ + ".CIFAR100")
VOCSegmentation = make(__name__ + ".VOCSegmentation")

__getattr__ = module_getattr(__name__)
