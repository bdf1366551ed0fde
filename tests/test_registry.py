"""Every part chosen by name (saliency backend, question policy, model, loss, aggregation) is looked up one way."""

from __future__ import annotations

import pytest

from crowdpatch.aggregate.votes import AGGREGATORS
from crowdpatch.crowd.policies import POLICIES
from crowdpatch.registry import Registry
from crowdpatch.saliency.base import BACKENDS


def test_an_unknown_name_is_refused_with_the_kind_and_every_valid_name() -> None:
    shapes: Registry[type] = Registry("shape")

    @shapes.register("square")
    class Square:
        pass

    @shapes.register("circle")
    def circle() -> str:
        return "circle"

    assert shapes.get("square") is Square and Square.name == "square"
    assert shapes.get("circle")() == "circle"
    with pytest.raises(ValueError, match=r"^unknown shape 'triangle'; choose from square, circle$"):
        shapes.get("triangle")


def test_a_second_part_cannot_take_a_registered_name_but_registering_the_same_part_again_is_harmless() -> None:
    shapes: Registry[type] = Registry("shape")

    @shapes.register("square")
    class Square:
        pass

    assert shapes.register("square")(Square) is Square
    with pytest.raises(ValueError, match="shape 'square' is already registered by"):
        shapes.register("square")(type("Other", (), {}))
    assert shapes.names() == ["square"]


def test_the_built_in_parts_are_registered_under_the_names_a_configuration_uses() -> None:
    assert POLICIES.names() == ["fixed", "adaptive", "precise"]
    assert AGGREGATORS.names() == ["ds", "mv", "glad"]
    assert {"spectral", "finegrained", "gt", "csnet", "onnx"} <= set(BACKENDS.names())
    with pytest.raises(ValueError, match="unknown planner 'greedy'; choose from fixed, adaptive"):
        POLICIES.get("greedy")
