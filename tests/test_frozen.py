"""PollPolicy and Timeout: hand-written frozen dataclasses behave as generated ones would."""
from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

from sail_lite import PollPolicy, Timeout
from sail_lite._frozen import frozen


def twin(cls):
    """The same fields, as ``@dataclass(frozen=True)`` would generate them (no validation)."""
    spec = [(f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory, hash=f.hash,
                                                compare=f.compare, repr=f.repr)) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, spec, frozen=True)


@pytest.mark.parametrize("cls,changes", [
    (PollPolicy, {"jitter": 0.0, "max_interval": {"flex": 3.0}, "learn": False}),
    (Timeout, {"read": 1.5, "upload": 7.0}),
])
def test_a_hand_written_frozen_dataclass_matches_the_generated_one(cls, changes):
    generated = twin(cls)
    # Same parameters, order and defaults (the factory fields' defaults are fresh equal values).
    ours = list(inspect.signature(cls).parameters.values())
    theirs = list(inspect.signature(generated).parameters.values())
    assert [p.name for p in ours] == [p.name for p in theirs]
    a, b = cls(), generated()
    assert {f.name: getattr(a, f.name) for f in dataclasses.fields(cls)} == dataclasses.asdict(b)
    assert repr(a) == repr(b)
    assert dataclasses.is_dataclass(a) and dataclasses.fields(a) and dataclasses.asdict(a) == dataclasses.asdict(b)
    changed, changed_twin = dataclasses.replace(a, **changes), dataclasses.replace(b, **changes)
    assert repr(changed) == repr(changed_twin) and changed != a and changed == cls(**changes)
    assert a == cls() and hash(a) == hash(cls()) and (a == b) is False
    if cls is Timeout:  # every field hashed: the hash is the generated one's
        assert hash(changed) == hash(changed_twin)
    positional = cls(*[getattr(changed, f.name) for f in dataclasses.fields(cls)])
    assert positional == changed
    for name in changes:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(a, name, getattr(changed, name))
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(a, name)
    assert pickle.loads(pickle.dumps(changed)) == changed
    assert cls.__dataclass_params__.frozen  # a frozen subclass may derive from it

    @dataclasses.dataclass(frozen=True)
    class Sub(cls):
        extra: int = 1

    assert Sub().extra == 1 and isinstance(Sub(), cls)


def test_frozen_needs_an_init_and_factory_fields_get_fresh_values():
    with pytest.raises(TypeError):
        @frozen
        class NoInit:
            x: int = 1

    assert PollPolicy().max_interval is not PollPolicy().max_interval
