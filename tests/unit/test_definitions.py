"""Handler decoration (inspected once, every problem reported at once) and the JSON serde."""

# No `from __future__ import annotations` here on purpose: handlers below carry real
# (evaluated) annotations, as most users write them; the engine tests use string annotations.

import dataclasses
import pickle
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from actors.sdk.contexts import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    WorkflowContext,
    WorkflowSharedContext,
)
from actors.sdk.definitions import HandlerSpec, Service, VirtualObject, Workflow, spec_of
from actors.sdk.errors import DefinitionError, RetryPolicy, TerminalError
from actors.sdk.serde import Serde


class Order(BaseModel):
    item: str
    quantity: int = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Opaque:
    """A plain class pydantic cannot build a JSON schema for."""


# -- good handlers ------------------------------------------------------------------------------


def test_exclusive_handler_stores_its_spec() -> None:
    obj = VirtualObject("Cart")
    policy = RetryPolicy(max_attempts=3)

    async def add(ctx: ObjectContext, order: Order) -> int:
        return order.quantity

    decorated = obj.handler(retry_policy=policy)(add)
    assert decorated is add, "the function itself is the typed reference"
    spec = spec_of(add)
    assert isinstance(spec, HandlerSpec)
    assert obj.handlers == {"add": spec}
    assert spec.definition is obj and spec.fn is add
    assert spec.name == "add" and spec.target == "Cart/add"
    assert spec.kind == "exclusive"
    assert spec.takes_arg is True
    assert spec.input.type is Order and spec.output.type is int
    assert spec.retry_policy is policy and spec.policy is policy


def test_shared_handler_without_argument_and_with_explicit_name() -> None:
    obj = VirtualObject("Cart", retry_policy=RetryPolicy(max_attempts=7))

    @obj.handler("total", kind="shared")
    async def get_total(ctx: ObjectSharedContext) -> list[int]:
        return []

    spec = spec_of(get_total)
    assert spec is not None
    assert spec.name == "total" and spec.target == "Cart/total"
    assert spec.kind == "shared"
    assert spec.takes_arg is False
    assert spec.output.type == list[int]
    assert spec.retry_policy is None
    assert spec.policy is obj.retry_policy, "falls back to the definition's policy"
    assert set(obj.handlers) == {"total"}


def test_context_annotation_may_be_broader_or_absent() -> None:
    obj = VirtualObject("Broad")

    @obj.handler()
    async def exclusive_as_shared(ctx: ObjectSharedContext) -> None: ...

    @obj.handler()
    async def exclusive_as_context(ctx: Context) -> None: ...

    @obj.handler(kind="shared")
    async def unannotated(ctx, arg):  # type: ignore[no-untyped-def]
        return arg

    spec = spec_of(unannotated)
    assert spec is not None and spec.takes_arg
    assert spec.input.type is Any and spec.output.type is Any
    assert set(obj.handlers) == {"exclusive_as_shared", "exclusive_as_context", "unannotated"}


def test_service_handler() -> None:
    svc = Service("Greeter")

    @svc.handler()
    async def greet(ctx: Context, name: str) -> str:
        return f"hello {name}"

    spec = spec_of(greet)
    assert spec is not None
    assert spec.kind == "exclusive" and spec.takes_arg and spec.target == "Greeter/greet"
    assert Service.kinds == ("exclusive",) and not Service.keyed
    assert VirtualObject.kinds == ("exclusive", "shared") and VirtualObject.keyed


def test_spec_of_a_plain_function_is_none() -> None:
    async def plain(ctx: Context) -> None: ...

    assert spec_of(plain) is None


# -- bad handlers -------------------------------------------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    obj = VirtualObject("Bad")

    @obj.handler()
    async def dup(ctx: ObjectContext) -> None: ...

    def sync_three(ctx, a, b):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(DefinitionError) as info:
        obj.handler("dup", kind="weird", retry_policy=5)(sync_three)  # type: ignore[arg-type]
    e = info.value
    assert e.where == "handler Bad/dup"
    text = "\n".join(e.issues)
    assert "async def" in text
    assert "kind must be one of" in text and "'weird'" in text
    assert "retry_policy must be a RetryPolicy" in text
    assert "already registered" in text
    assert "not 3 parameters" in text
    assert len(e.issues) == 5, e.issues
    assert str(e).startswith("handler Bad/dup: ")
    assert spec_of(sync_three) is None, "a refused handler gets no spec"
    assert obj.handlers["dup"].fn is dup, "the registered handler is untouched"


def test_var_args_and_wrong_context_for_shared_handler() -> None:
    obj = VirtualObject("Bad2")

    async def reader(ctx: ObjectContext, *args: int) -> None: ...

    with pytest.raises(DefinitionError) as info:
        obj.handler(kind="shared")(reader)
    issues = info.value.issues
    assert any("no *args" in i for i in issues), issues
    assert any(
        "annotated ObjectContext" in i and "shared handler" in i and "ObjectSharedContext" in i
        for i in issues
    ), issues
    assert len(issues) == 2
    assert obj.handlers == {}


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: lambda ctx: None, id="sync-lambda"),
        pytest.param(lambda: _async_fn_kwargs, id="kwargs"),
        pytest.param(lambda: _async_fn_kwonly, id="keyword-only"),
        pytest.param(lambda: _async_fn_none, id="no-params"),
    ],
)
def test_other_bad_signatures(make: Any) -> None:
    obj = VirtualObject("Sig")
    with pytest.raises(DefinitionError):
        obj.handler("h")(make())
    assert obj.handlers == {}


async def _async_fn_kwargs(ctx: ObjectContext, **kw: int) -> None: ...


async def _async_fn_kwonly(ctx: ObjectContext, *, arg: int) -> None: ...


async def _async_fn_none() -> None: ...


def test_service_refuses_shared_kind_and_object_context() -> None:
    svc = Service("Svc")

    async def h(ctx: ObjectContext) -> None: ...

    with pytest.raises(DefinitionError) as info:
        svc.handler(kind="shared")(h)
    issues = info.value.issues
    assert any("kind must be one of ('exclusive',)" in i for i in issues), issues
    assert any("annotated ObjectContext" in i and "gets Context" in i for i in issues), issues


def test_unserializable_types_and_bad_name() -> None:
    obj = VirtualObject("Types")

    async def h(ctx: ObjectContext, arg: Opaque) -> None: ...

    with pytest.raises(DefinitionError) as info:
        obj.handler("not a name")(h)
    issues = info.value.issues
    assert any("identifier" in i for i in issues), issues
    assert any("cannot be serialized as JSON" in i for i in issues), issues


@pytest.mark.parametrize("name", ["", "a/b", 5])
def test_bad_definition_name(name: Any) -> None:
    with pytest.raises(DefinitionError):
        VirtualObject(name)
    with pytest.raises(DefinitionError):
        Service(name)


def test_bad_placement() -> None:
    with pytest.raises(DefinitionError, match="placement"):
        VirtualObject("P", placement="everywhere")  # type: ignore[arg-type]
    obj = VirtualObject("P", placement="dedicated", idle_timeout=timedelta(seconds=3))
    assert obj.placement == "dedicated" and obj.idle_timeout == timedelta(seconds=3)


# -- serde --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "value", "json"),
    [
        pytest.param(
            Order, Order(item="tea", quantity=2), '{"item":"tea","quantity":2}', id="model"
        ),
        pytest.param(Point, Point(1, 2), '{"x":1,"y":2}', id="dataclass"),
        pytest.param(int, 42, "42", id="int"),
        pytest.param(str, "hi", '"hi"', id="str"),
        pytest.param(list[int], [1, 2], "[1,2]", id="list"),
        pytest.param(Any, {"a": [1, None]}, '{"a":[1,null]}', id="any"),
    ],
)
def test_serde_round_trip(tp: Any, value: Any, json: str) -> None:
    serde = Serde(tp)
    assert serde.dump(value) == json
    back = serde.load(json)
    assert back == value and type(back) is type(value)
    assert serde.to_json(value, "input") == json


def test_serde_to_json_validates_python_values() -> None:
    assert Serde(Order).to_json({"item": "tea"}, "input") == '{"item":"tea","quantity":1}'
    assert Serde(Point).to_json({"x": 1, "y": 2}, "input") == '{"x":1,"y":2}'


@pytest.mark.parametrize(
    ("tp", "value"),
    [
        pytest.param(int, "abc", id="str-for-int"),
        pytest.param(int, [1], id="list-for-int"),
        pytest.param(Order, {"quantity": 1}, id="model-missing-field"),
        pytest.param(Point, {"x": "nope", "y": 2}, id="dataclass-bad-field"),
    ],
)
def test_serde_to_json_rejects_wrong_types_with_400(tp: Any, value: Any) -> None:
    with pytest.raises(TerminalError) as info:
        Serde(tp).to_json(value, "input of Cart/add")
    assert info.value.status_code == 400
    assert info.value.message.startswith("input of Cart/add: ")


def test_serde_of_empty_or_none_annotation_is_any() -> None:
    import inspect

    assert Serde().type is Any
    assert Serde(None).type is Any
    assert Serde(inspect.Parameter.empty).type is Any


def test_serde_pickles() -> None:
    copy = pickle.loads(pickle.dumps(Serde(Order)))
    assert copy.type is Order
    assert copy.load('{"item":"x"}') == Order(item="x")


def test_serde_accepts_another_copy_of_the_model_class() -> None:
    """A connecting driver's model class is not the runtime's copy (definitions travel by
    value): its instances are taken by their fields, and still validated."""

    class Order(BaseModel):
        qty: int

    copy = type("Order", (BaseModel,), {"__annotations__": {"qty": int}})
    assert Serde(Order).to_json(copy(qty=3), "input") == '{"qty":3}'
    with pytest.raises(TerminalError) as err:
        Serde(Order).to_json(
            type("Order", (BaseModel,), {"__annotations__": {"qty": str}})(qty="many"), "input"
        )
    assert err.value.status_code == 400


# -- workflows ----------------------------------------------------------------------------------


def test_workflow_main_and_shared_handlers() -> None:
    wf = Workflow("Flow")

    @wf.main("start")
    async def run(ctx: WorkflowContext, email: str) -> str: ...

    @wf.handler()
    async def poke(ctx: WorkflowSharedContext) -> None: ...

    assert wf.main_handler == "start" and wf.is_main("start") and not wf.is_main("poke")
    assert spec_of(run).kind == "exclusive"  # type: ignore[union-attr]
    assert spec_of(poke).kind == "shared"  # type: ignore[union-attr]
    assert wf.keyed, "a workflow is keyed by its workflow id"


def test_workflow_has_one_main() -> None:
    wf = Workflow("TwoMains")

    @wf.main()
    async def first(ctx: WorkflowContext) -> None: ...

    async def second(ctx: WorkflowContext) -> None: ...

    with pytest.raises(DefinitionError, match=r"has a main handler already \(first\)") as e:
        wf.main()(second)
    assert e.value.where == "workflow TwoMains"
    assert wf.main_handler == "first" and "second" not in wf.handlers
    assert spec_of(second) is None


def test_workflow_handlers_are_shared() -> None:
    wf = Workflow("NotShared")

    async def signal(ctx: WorkflowContext) -> None: ...

    with pytest.raises(DefinitionError, match=r"the one exclusive handler is @wf\.main") as e:
        wf.handler(kind="exclusive")(signal)
    assert e.value.where == "workflow NotShared"
    assert wf.handlers == {} and wf.main_handler is None


def test_workflow_context_annotations_and_a_refused_main() -> None:
    wf = Workflow("Contexts")

    async def shared_wants_main_ctx(ctx: WorkflowContext) -> None: ...

    with pytest.raises(
        DefinitionError,
        match="annotated WorkflowContext, but a shared handler "
        "of a Workflow gets WorkflowSharedContext",
    ):
        wf.handler()(shared_wants_main_ctx)

    def not_async(ctx: WorkflowContext) -> None: ...

    with pytest.raises(DefinitionError, match="async def"):
        wf.main()(not_async)  # type: ignore[arg-type]
    assert wf.main_handler is None, "a refused main leaves the place free"

    @wf.main()
    async def run(ctx: WorkflowSharedContext) -> None: ...  # broader than it gets: fine

    assert wf.main_handler == "run"
