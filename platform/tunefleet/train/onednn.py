"""fp32 linear layers through oneDNN's matrix product on a CPU.

On a CPU PyTorch sends an fp32 `nn.Linear` to MKL's sgemm, and a bf16 one (under autocast) to
oneDNN. For the products of fine-tuning an encoder (a few hundred tokens by 384-1,536 features),
oneDNN's fp32 product ran faster than MKL's on the 2-core AMD EPYC of issue 13: forward 175-212
against 138-177 GFLOP/s (256 x 384 x 1,536), the input gradient 185-201 against 99-175
(benchmarks/RESULTS.md). Matrix products are about two thirds of an fp32 training step there: the
whole step gained 7% and an evaluation 13% (`benchmarks/cpu_step_ab.py --change linear`).

`OneDNNLinear` runs the forward product and both backward products (the input's gradient and, for a
layer that narrows, the weight's) through `torch.ops.mkldnn._linear_pointwise`, the op
torch.compile's CPU backend emits for linear layers, and the bias gradient as a sum. The arithmetic
is IEEE fp32 as before; the results differ from MKL's by rounding order only (about 1e-6 relative).
It takes over only where it applies:
a CPU, fp32 input and weight, autocast off. Everything else (bf16 autocast, which reaches oneDNN
already; a GPU; half-precision weights) is `nn.Linear`'s own forward.

Small layers stay `nn.Linear`: oneDNN costs about 50 us more per call than MKL, which a 128 x 128
product does not earn back (220 against 154 us for 48-1,000 rows), and about 0.9 ms the first time
it sees a shape (it compiles a kernel per shape and keeps it), which the tiny models of the tests
would pay at nearly every step. From 384 x 384 on it is faster (957 against 1,064 us; 384 x 1,536:
4,075 against 4,649), so layers of at least `MIN_WEIGHTS` weights swap: every layer of MiniLM
and larger encoders but not a classification head.

It pays only where the CPU has AVX-512. On a 2-core AMD EPYC with AVX2 alone (family 23, no
AVX-512, no bf16: the CPU of issue 13, lent in session 29) MKL's fp32 products already run near
the cores' peak, and oneDNN's gained nothing: 0.956x per length-grouped step and 1.00x per
evaluation (`benchmarks/cpu_step_ab.py --change linear`), 40 packed steps in 23.6-26.9 s against
MKL's 20.0-23.0 s (alternating runs of a throw-away script), and the loop's own throughput the same
either way (`benchmarks/throughput.py`: 452.6 tok/s with MKL, 459.2 with oneDNN). A private op that
does not pay is not worth its risk, so the loop swaps layers only when `pays_here()`:
torch's CPU capability is AVX-512, or `TUNEFLEET_ONEDNN_LINEAR=1` says so (`0` never swaps).

`torch.ops.mkldnn._linear_pointwise` is a private op: `available()` checks it once against
`F.linear` and says no if it is missing or disagrees, and the model then keeps `nn.Linear`.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import nn
from torch.nn import functional as F


def _product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias for a 2-D x, by oneDNN (weight as `nn.Linear` keeps it: out x in)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                weight_grad_by_mkl: bool) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(rows, weight)
        ctx.input_shape = x.shape
        ctx.has_bias = bias is not None
        ctx.weight_grad_by_mkl = weight_grad_by_mkl
        return _product(rows, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        rows, weight = ctx.saved_tensors
        grad_rows = grad_output.reshape(-1, grad_output.shape[-1])
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # dL/dx = dL/dy @ W, i.e. a linear layer with weight W.T
            grad_x = _product(grad_rows, weight.t(), None).view(ctx.input_shape)
        if ctx.needs_input_grad[1]:  # dL/dW = (dL/dy).T @ x; skipped for a frozen weight (LoRA)
            # oneDNN's op wants its left operand contiguous, so it first copies the transposed
            # gradient (rows x outputs, a slow strided copy). MKL reads transposed operands in place.
            grad_weight = (grad_rows.t().mm(rows) if ctx.weight_grad_by_mkl
                           else _product(grad_rows.t(), rows.t(), None))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias, None


class OneDNNLinear(nn.Linear):
    """`nn.Linear` whose fp32 products on a CPU go through oneDNN; the same parameters and state dict.

    The weight's gradient of a layer at least as wide out as in (a transformer's query, key, value,
    attention output and the feed-forward's widening layer) goes through MKL instead: there
    oneDNN's copy of the transposed output gradient costs more than its product saves (384 -> 1,536
    at 400 rows: 3.8 ms against MKL's 2.6 ms; a narrowing 1,536 -> 384 layer: 2.7 ms against 2.8 ms,
    so oneDNN; `benchmarks/RESULTS.md`).
    """

    # Where the weight's gradient is computed: None decides by the layer's shape as above; True or
    # False forces MKL or oneDNN (benchmarks/cpu_step_ab.py --change weight-grad compares the two).
    weight_grad_by_mkl: bool | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and x.numel() > 0 and not torch.is_autocast_enabled("cpu")):
            by_mkl = self.weight_grad_by_mkl
            if by_mkl is None:
                by_mkl = self.out_features >= self.in_features
            return _OneDNNLinearFunction.apply(x, self.weight, self.bias, by_mkl)
        return super().forward(x)


@functools.cache
def available() -> bool:
    """Whether this torch has oneDNN's linear op and it computes what `F.linear` computes."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        x, weight, bias = (torch.randn(shape, generator=generator) for shape in ((5, 7), (3, 7), (3,)))
        return torch.allclose(_product(x, weight, bias), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    except (AttributeError, RuntimeError):  # the op is missing, or its signature changed
        return False


def pays_here() -> bool:
    """Whether the loop should swap layers on this CPU: `TUNEFLEET_ONEDNN_LINEAR` (1 or 0) if set,
    else whether torch dispatches AVX-512 kernels here (see the module's docstring for why)."""
    forced = os.environ.get("TUNEFLEET_ONEDNN_LINEAR", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"TUNEFLEET_ONEDNN_LINEAR={forced!r}: set it to 1 (swap), 0 (never), or leave it unset "
                         "(swap where the CPU has AVX-512)")
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


MIN_WEIGHTS = 2**17  # between 128 x 128 (slower through oneDNN) and 384 x 384 (faster)


def use_onednn_linear(model: nn.Module, min_weights: int = MIN_WEIGHTS) -> int:
    """Turn the model's `nn.Linear` modules of at least `min_weights` weights into `OneDNNLinear`
    in place (the same parameter objects, so an optimizer or a LoRA wrapper built on them still holds
    them); returns how many. None where oneDNN's op is not `available()`."""
    if not available():
        return 0
    swapped = 0
    for module in model.modules():
        # Subclasses of nn.Linear may do something else: leave them be.
        if type(module) is nn.Linear and module.weight.numel() >= min_weights:
            module.__class__ = OneDNNLinear
            swapped += 1
    return swapped
