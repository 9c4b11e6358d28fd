"""Placeholder classes for the torchvision stand-in (see __init__.py)."""


def make(qualname: str) -> type:
    """A class that can be built and subclassed but raises when used."""

    def __init__(self, *args, **kwargs):
        self._stub_args = (args, kwargs)

    def _fail(self, *args, **kwargs):
        raise NotImplementedError(
            f"{qualname} is a stand-in (tools/peers/torchvision_stub): torchvision is not "
            f"installed in this environment, only NNCodec's weight coder can run here"
        )

    return type(qualname.rsplit(".", 1)[-1], (), {
        "__init__": __init__, "__call__": _fail, "__getitem__": _fail, "__len__": _fail,
        "__iter__": _fail, "__module__": qualname.rsplit(".", 1)[0],
    })


def module_getattr(module_name: str):
    """A PEP 562 ``__getattr__`` that serves a placeholder class for any public name."""
    cache = {}

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        if name not in cache:
            cache[name] = make(f"{module_name}.{name}")
        return cache[name]

    return __getattr__
