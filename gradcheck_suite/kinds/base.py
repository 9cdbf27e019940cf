"""The interface of a way to hold a backward: one :class:`Kind` per module of ``kinds/``.

Standard library only: ``record/spec.py`` validates a record's ``kind`` against the registry
at start-up, before torch is imported.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Kind:
    """A way to hold a backward: what the harness needs to know about it, so that no
    module tests ``model.kind`` for a name."""

    #: the one spelling: a record's ``Model.kind``, messages, and ``gradcheck-suite init KIND``
    name: str
    #: ``init``'s starting file of this kind, a ``str.format`` template of ``{name}`` and ``{cls}``
    #: (literal braces doubled); it must pass the check as written
    template: str
    #: the public function that wraps the user's code into a record, as ``"module.function"``
    #: of ``kinds/`` (exported from the package); None where the user writes a Model directly
    factory: str | None = None
    #: the record's forward and backward are the user's own torch code, called as written (no
    #: factory around them): an op counter sees every op of the manual side
    plain_torch: bool = False
    #: the user's code works on numpy arrays: autograd cannot see through it (without a
    #: ``reference``, finite differences are the only oracle: a two-way check), their memory is
    #: outside torch's allocator (added through tracemalloc: an approximate peak), and the code
    #: gets its own copies of the arguments and the upstream gradient on each call
    numpy_arrays: bool = False
    #: the manual gradient comes back with autograd's graph, so ``--order N`` can differentiate
    #: it again (not numpy code, nor ranks that send back plain tensors)
    higher_orders: bool = True
    #: added to "backward gives another result when called again": the usual cause for this kind
    repeat_hint: str = ""
    #: other spellings ``init`` accepts (users' scripts), never printed
    aliases: tuple[str, ...] = ()
    #: for a factory that takes the user's object: whether this kind holds ``op``
    holds: Callable[[Any], bool] | None = None
    #: ``holds`` takes any callable: asked after the kinds that recognise their object by its type
    fallback: bool = False
    #: the user's object is always called directly, so its positions are the record's arguments
    #: (otherwise only a class is: a lambda may wrap the op and reorder them)
    called_directly: bool = False
    #: a test of the object's registration, run on each case before the gradient checks when the
    #: record asks for it (``opcheck=True``), or the profile does (the nightly one, unless the
    #: record says ``opcheck=False``): ``(call, positional, keywords, required) -> (problem, note)``,
    #: each one line or None; ``required``: the record asked for the test itself
    registration_check: Callable[..., tuple[str | None, str | None]] | None = None
