"""A stand-in for torchvision, for running Fraunhofer NNCodec without it.

NNCodec 2.1.3 imports torchvision at start-up, but only its dataset and model
helpers use it; the weight coder (``nncodec.nn.encode``/``decode``) never does.
PyPI's torchvision 0.28.0 is linked against CUDA and does not import next to
the CPU build of torch, so tools/peers/setup_nnc.sh uninstalls it and
tools/peers/nnc_runner.py puts this directory first on ``sys.path`` instead.

Every name NNCodec reads at import time exists: ``datasets.ImageFolder`` (it is
subclassed), ``transforms.Compose``/``Resize``/... (instances are built at
import time) and ``models``. Any other attribute of these modules is a
placeholder class too. Building a placeholder works; *using* one (calling it,
or opening a dataset) raises NotImplementedError, so a code path that really
needs torchvision fails loudly instead of computing something wrong.
"""

from . import datasets, models, transforms  # noqa: F401

__version__ = "0.0+stub"
