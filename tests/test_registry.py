from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from retrodistill.registry import Registry, parameters


def test_register_get_build_and_unknown_names() -> None:
    reg: Registry = Registry("widget")

    @reg.register("box")
    @dataclass
    class Box:
        size: int = field(default=1, metadata={"help": "edge length"})

    assert reg.names() == ["box"]
    assert reg.build("box", {"size": 3}) == Box(3)
    with pytest.raises(ValueError, match="unknown widget 'ball'; registered: box"):
        reg.get("ball")
    with pytest.raises(ValueError, match="no parameter.*colour"):
        reg.build("box", {"colour": "red"})
    with pytest.raises(ValueError, match="already registered"):
        reg.register("box")(type("Other", (), {}))
    (p,) = parameters(Box)
    assert (p.name, p.default, p.help) == ("size", 1, "edge length")
