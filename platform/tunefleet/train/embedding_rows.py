"""AdamW that trains the word embedding's rows only once a batch has used them, for training on a CPU.

A fine-tuning batch reads a few hundred of the word embedding's rows (MiniLM: 30,522 rows of 384,
47 MB), but PyTorch's dense gradient for it is the whole table: zero-filled every step, added into,
read by the gradient norm, then AdamW reads the table, its gradient and both moments and writes three
of them back, all 30,522 rows every step. On a 2-core CPU that is about 8% of an fp32 MiniLM step
(benchmarks/RESULTS.md, issue 13), memory traffic that buys nothing for the rows no batch has used.

Here the embedding makes sparse gradients (`nn.Embedding.sparse`: the batch's rows only) and AdamW
updates only the rows some batch has used so far, the *active* rows: a row no batch has used has
zero moments, so dense AdamW's update of it is its weight decay alone, p <- p (1 - lr wd). Those
rows share one pending factor, the product of the decays so far, applied to a row when a batch first
reads it (it becomes active) and to all of them before anything else reads the table (an evaluation's
forward, `state_dict`, so checkpoints and saved models hold dense AdamW's weights). Active rows go
through torch's own fused AdamW kernel, gathered into a compact block: the result is dense AdamW's
to fp32 rounding (sums of a row's gradient and the decays are multiplied in another order). Over an
epoch of 1,024 CoNLL-2003 sentences 3,508 rows become active (11%); over all 14,041, 14,097 (46%).

Used where it pays and is known to be exact: a CPU, one worker (DDP's all-reduce of a sparse
gradient is left out), a word embedding that trains and is not shared with another layer (tied
output embeddings would mix a dense gradient in); everywhere else the loop uses torch's fused AdamW.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.adam import adam


def rowwise_embedding(model: nn.Module) -> nn.Embedding | None:
    """The model's word embedding if it can be trained row by row (it trains, and no other module
    shares its weight), else None."""
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    if not isinstance(embedding, nn.Embedding) or not embedding.weight.requires_grad:
        return None
    if embedding.max_norm is not None or embedding.scale_grad_by_freq:
        return None  # both change the rows or the gradient in ways the bookkeeping here does not follow
    holders = [name for name, param in model.named_parameters(remove_duplicate=False) if param is embedding.weight]
    return embedding if len(holders) == 1 else None


class RowwiseAdamW(torch.optim.AdamW):
    """Fused AdamW over `params`, with `embedding`'s weight (one of them) updated row by row.

    Its state (in `state[embedding.weight]`, so `state_dict`/`load_state_dict` carry it): the shared
    `step`, `rows` (the active rows' ids, as float32 because `load_state_dict` casts every state
    tensor to the parameter's dtype; exact below 2^24), `exp_avg`/`exp_avg_sq` (their moments, row i
    of each for rows[i]; the buffers grow by doubling, `active` rows are in use) and `pending_decay`.
    """

    def __init__(self, params: Any, embedding: nn.Embedding, **kwargs: Any) -> None:
        super().__init__(params, fused=True, **kwargs)
        for group in self.param_groups:
            if group["amsgrad"] or group["maximize"]:
                raise ValueError("RowwiseAdamW: amsgrad and maximize are not supported")
        self._weight = embedding.weight
        self._slot: torch.Tensor | None = None  # row id -> index into the state's buffers (-1: inactive)
        embedding.sparse = True
        # Reading the table: a training forward activates the rows it reads; anything else (an
        # evaluation, state_dict, save_pretrained) gets every row's pending decay applied first.
        embedding.register_forward_pre_hook(self._before_forward, with_kwargs=True)
        embedding.register_state_dict_pre_hook(lambda *_: self.apply_pending_decay())

    # ---- state ------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        state = self.state[self._weight]
        if not state:
            width = self._weight.shape[1]
            state.update(step=torch.tensor(0.0), rows=torch.empty(0), active=0, pending_decay=1.0,
                         exp_avg=self._weight.new_zeros(0, width), exp_avg_sq=self._weight.new_zeros(0, width))
        return state

    def _slots(self) -> torch.Tensor:
        if self._slot is None:  # first use, or after load_state_dict
            state = self._state()
            self._slot = torch.full((self._weight.shape[0],), -1, dtype=torch.int64)
            rows = state["rows"][:state["active"]].long()
            self._slot[rows] = torch.arange(len(rows))
        return self._slot

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._slot = None

    # ---- the rows ---------------------------------------------------------------------------------

    @torch.no_grad()
    def _activate(self, ids: torch.Tensor) -> None:
        """Make the rows `ids` (unique) active: their pending decay applied, zero moments."""
        state, slot = self._state(), self._slots()
        new = ids[slot[ids] < 0]
        if len(new) == 0:
            return
        if state["pending_decay"] != 1.0:
            self._weight.index_copy_(0, new, self._weight.index_select(0, new).mul_(state["pending_decay"]))
        start, end = state["active"], state["active"] + len(new)
        if end > len(state["rows"]):  # grow the buffers by doubling: an epoch's new rows cost one copy each
            size = max(end, 2 * len(state["rows"]), 1024)
            for key in ("exp_avg", "exp_avg_sq"):
                grown = state[key].new_zeros(size, self._weight.shape[1])
                grown[:start] = state[key][:start]
                state[key] = grown
            rows = torch.full((size,), -1.0)
            rows[:start] = state["rows"][:start]
            state["rows"] = rows
        state["rows"][start:end] = new.float()
        slot[new] = torch.arange(start, end)
        state["active"] = end

    @torch.no_grad()
    def apply_pending_decay(self) -> None:
        """Bring the inactive rows up to date, so that the table holds dense AdamW's weights."""
        state = self._state()
        if state["pending_decay"] == 1.0:
            return
        inactive = self._slots() < 0
        scale = torch.ones(len(inactive), dtype=self._weight.dtype).masked_fill_(inactive, state["pending_decay"])
        self._weight.mul_(scale[:, None])  # x 1.0 is exact for the active rows
        state["pending_decay"] = 1.0

    def _before_forward(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if module.training and torch.is_grad_enabled():
            self._activate(torch.unique(args[0] if args else kwargs["input"]).cpu())
        else:
            self.apply_pending_decay()

    # ---- the step ---------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        grad = self._weight.grad
        if grad is None:
            return super().step(closure)
        if not grad.is_sparse:
            raise RuntimeError("RowwiseAdamW: the embedding's gradient is dense; was its `sparse` reset?")
        self._weight.grad = None  # the fused step below takes dense gradients only; it skips this one
        try:
            loss = super().step(closure)
        finally:
            self._weight.grad = grad
        self._step_rows(grad.coalesce())
        return loss

    def _step_rows(self, grad: torch.Tensor) -> None:
        """Dense AdamW's step for the active rows (the gradient's among them); the decay of the rest."""
        # Looked up each step: load_state_dict replaces the group dicts (and a scheduler sets their lr).
        group = next(g for g in self.param_groups if any(p is self._weight for p in g["params"]))
        ids, values = grad.indices()[0], grad.values()
        self._activate(ids)  # rows a training forward did not read (none, on one worker)
        state, slot = self._state(), self._slots()
        active = state["active"]
        rows = state["rows"][:active].long()
        compact_grad = values.new_zeros(active, values.shape[1]).index_copy_(0, slot[ids], values)
        compact = self._weight.index_select(0, rows)
        adam([compact], [compact_grad], [state["exp_avg"][:active]], [state["exp_avg_sq"][:active]], [],
             [state["step"]], fused=True, grad_scale=getattr(self, "grad_scale", None),
             found_inf=getattr(self, "found_inf", None), decoupled_weight_decay=True, amsgrad=False,
             beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"],
             weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
        self._weight.index_copy_(0, rows, compact)
        state["pending_decay"] *= 1.0 - float(group["lr"]) * group["weight_decay"]
