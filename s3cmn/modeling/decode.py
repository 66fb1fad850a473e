"""Helpers of the one-token decode path: parameter-derived constants cached per weights version, and Linear calls
without module overhead.

``derived``: tensors derived from parameters, computed once per version of the parameters.

A fast ``step`` needs the same derived tensors every token: Hyena's reversed filter taps (an MLP over
``hyena_filter_length`` positions), Mamba's ``A = −exp(A_log)``, the LIF layer's β, the LM head's transposed
weight. Recomputing them is most of a small model's per-token work, and comparing the parameters by value to
decide whether to recompute costs as much. Instead every source tensor is identified by the tensor object
itself (a weak reference: a freed parameter whose address is reused never matches) and its ``_version``
counter, which PyTorch moves on every in-place change (an optimizer step, ``load_state_dict``, ``copy_``).
So a lookup is a few Python comparisons and no tensor op. A weight changed in place, re-assigned (``p.data =
...``, ``module.to(...)``) or loaded is seen; a change written through ``p.data`` in place (``p.data.mul_(2)``)
bypasses the version counter, as it bypasses autograd, and is not: change weights under ``torch.no_grad()``.
The fused optimizer kernels (``AdamW(fused=True)``, the trainer's default on the CPU) write the parameters
without moving their version counters either, so every cache also records the count of optimizer steps taken
in the process (a global ``torch.optim`` step hook) and is rebuilt after any step.

Only the no-grad decode paths use this: with gradients enabled the derived tensors must stay in the graph.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import register_module_module_registration_hook
from torch.optim.optimizer import register_optimizer_step_post_hook

from s3cmn.ops.int8_gemv import int8_gemv, unpack_linear_dynamic

__all__ = ["derived", "linear", "module_tensors", "plain_weight"]


_optimizer_steps = 0  # optimizer steps taken in this process (any optimizer): a step invalidates every cache


def _count_optimizer_step(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


class _Store(dict):
    """The cache on a module: dropped by copy, deepcopy and pickling (it holds weak references, and a copy's
    parameters are other tensors anyway)."""

    def __reduce__(self) -> tuple:
        return (_Store, ())

    def __deepcopy__(self, memo: dict) -> _Store:
        return _Store()


def _store(module: nn.Module) -> _Store:
    store = module.__dict__.get("_derived")
    if store is None:
        store = module.__dict__["_derived"] = _Store()
    return store


def derived(module: nn.Module, name: str, sources: Sequence[Tensor], build: Callable[[], Tensor]) -> Tensor:
    """``build()`` (run under no_grad), cached on ``module`` under ``name`` until a tensor of ``sources`` is
    replaced or changed in place."""
    store = _store(module)
    hit = store.get(name)
    if hit is not None:
        refs, steps, value = hit
        if steps == _optimizer_steps and len(refs) == len(sources) and all(
            ref() is t and (version, pointer) == (t._version, t.data_ptr())
            for (ref, version, pointer), t in zip(refs, sources, strict=True)
        ):
            return value
    with torch.no_grad():
        value = build()
    store[name] = (tuple((weakref.ref(t), t._version, t.data_ptr()) for t in sources), _optimizer_steps, value)
    return value


_module_registrations = 0  # submodules set or added in this process (any module): the module trees may have changed


def _count_module_registration(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    global _module_registrations
    _module_registrations += 1


register_module_module_registration_hook(_count_module_registration)


def module_tensors(*modules: nn.Module) -> list[Tensor]:
    """Every parameter and buffer of ``modules`` and their submodules.

    The walk of the module tree (~0.2 ms a token for the small preset's ~100 modules) is kept on the first
    module until any submodule anywhere is set or added (a global registration hook counts them); each call
    then reads the parameters and buffers afresh from the kept modules' dicts, so a replaced parameter or
    buffer is always seen."""
    store = _store(modules[0])
    key = ("module_tensors", *map(id, modules[1:]))
    hit = store.get(key)
    if hit is None or hit[0] != _module_registrations:
        dicts: list[dict[str, Tensor | None]] = []
        stack = list(modules)
        while stack:
            m = stack.pop()
            dicts += (m._parameters, m._buffers)
            stack.extend(m._modules.values())
        hit = store[key] = (_module_registrations, dicts)
    return [t for d in hit[1] for t in d.values() if t is not None]


def plain_weight(weight: Tensor) -> bool:
    """Whether ``weight`` is an ordinary dense tensor (not a quantised tensor subclass such as torchao's)."""
    return type(weight) in (nn.Parameter, Tensor) and weight.layout == torch.strided


def linear(layer: nn.Module, x: Tensor, bias: bool = True) -> Tensor:
    """``layer(x)`` for a Linear on the decode path (a few rows, no gradients); ``bias`` False leaves a plain
    Linear's bias out (Mamba adds dt_proj's inside its SSM step).

    A plain ``nn.Linear`` on the CPU multiplies by a transposed (in, out) copy of its weight, kept per weights
    version: at one row a GEMV over (in, out) streams the weight with unit stride and runs ~5x faster than
    ``F.linear`` over (out, in) once the weights no longer sit in the core's L2 cache (a whole model's do not).
    The copy doubles the Linear weights' memory while decoding. torch's dynamic int8 Linear runs the
    weight-only int8 GEMV of :mod:`s3cmn.ops.int8_gemv` on its codes (no per-call input quantisation). Any
    other layer (LoRA-wrapped, bitsandbytes, ...) runs its own forward.
    """
    if type(layer) is not nn.Linear:
        packed = getattr(getattr(layer, "_packed_params", None), "_packed_params", None)
        if packed is None or x.device.type != "cpu":
            return layer(x)
        # torch's dynamic int8 Linear: its codes unpacked once per packed weight, then a weight-only int8 GEMV
        store = _store(layer)
        if store.get("int8") is None or store["int8"][0] is not packed:
            store["int8"] = (packed, unpack_linear_dynamic(packed))
        q, scale, zero_point, b = store["int8"][1]
        return int8_gemv(x, q, scale, zero_point, b if bias else None).to(x.dtype)
    b = layer.bias if bias else None
    if x.device.type != "cpu" or x.dtype != layer.weight.dtype or not plain_weight(layer.weight):
        return F.linear(x, layer.weight, b)  # (a tensor subclass, e.g. torchao's int8 weight, runs its own op)
    weight = layer.weight
    weight_t = derived(layer, "weight_t", [weight], lambda: weight.t().contiguous())  # (in, out)
    y = torch.matmul(x, weight_t)  # (..., out)
    return y if b is None else y.add_(b)
