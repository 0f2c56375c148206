"""Token loss without full-vocabulary logits for the whole batch.

The decoder's hidden states are projected to the vocabulary only at positions that
are trained on, a chunk at a time. Under autograd the gradient of each chunk is taken
in the same pass as its loss (softmax minus one-hot, computed in place in the chunk's
logits buffer) and projected straight back to the hidden states, so peak memory holds
one chunk of logits instead of tokens x vocab, nothing is recomputed in the backward
pass and the head costs two matrix products per trained token instead of three.
Written here rather than taken from a library because it must work on packed rows with
any Hugging Face causal LM, plain or wrapped by PEFT.

A packed row is also attended to one example at a time where the model uses PyTorch's
SDPA: instead of one masked attention over the whole row (row length squared, mostly
masked out), each example gets its own causal attention, the same result for a fraction
of the work. The row's example bounds travel to the attention layers as `cu_seq_lens_q`
(transformers' name for packed-sequence bounds), so gradient checkpointing recomputes the
same way; a small function registered in front of transformers' SDPA on first use acts on
calls that carry them and hands every other call to transformers unchanged. Models with
sliding windows, attention soft-capping or other attention variants keep the model's own
masked attention.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.pack import IGNORE_INDEX, PackedBatch
from tunesmith.model.adapters import causal_lm


@dataclass(slots=True)
class TokenLoss:
    """Summed (not averaged) so accumulation can normalise over all tokens of a step.
    `loss_sum` is the cross-entropy of the label targets and `kl_sum` the KL divergence of the
    distilled ones (see `token_loss`), `tokens` and `distilled` their counts."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    tokens: int
    kl_sum: torch.Tensor | None = None
    distilled: int = 0


@dataclass(slots=True)
class Teacher:
    """The reference model's side of distilled targets: its final hidden states at those
    targets' positions, in the row's order, and its output head."""

    hidden: torch.Tensor
    head: torch.nn.Module


TILE_LOGITS = 1 << 23
"""At most this many logits (32 MiB in float32) are held at once, whatever chunk_tokens allows."""


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T + bias` against `targets`, and the count of
    argmax hits, a chunk of tokens at a time. Gradients are computed during the forward pass
    (the loss is a scalar, so backward only scales them by the incoming gradient).

    With a `teacher` (hidden states, head weight and bias; no gradient) the targets are the
    teacher's softmax instead of token ids: the loss is KL(teacher || student) summed over
    tokens, its gradient softmax minus the teacher's probabilities, and no hit is counted.

    `compute` (under autocast: its dtype) is the dtype of the two matrix products; softmax, the
    loss and the head's weight gradient are accumulated in fp32 and every gradient is returned in
    its input's dtype (an fp32 master weight gets an fp32 gradient)."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor | None, softcap: float | None, chunk_tokens: int,
                with_grads: bool, compute: torch.dtype | None = None,
                teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(hidden.device.type, enabled=False):  # the casts below are explicit
            return _LinearCrossEntropy._forward(ctx, hidden, weight, bias, targets, softcap, chunk_tokens,
                                                with_grads, compute, teacher)

    @staticmethod
    def _forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 targets: torch.Tensor | None, softcap: float | None, chunk_tokens: int,
                 with_grads: bool, compute: torch.dtype | None,
                 teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        master_dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        if compute is not None and compute != weight.dtype:
            weight = weight.to(compute)
            bias = bias.to(compute) if bias is not None else None
        hidden_in = hidden
        if hidden.dtype != weight.dtype:
            hidden = hidden.to(weight.dtype)
        need_hidden = with_grads and ctx.needs_input_grad[0]
        need_weight = with_grads and ctx.needs_input_grad[1]
        need_bias = with_grads and bias is not None and ctx.needs_input_grad[2]
        count = hidden.shape[0]
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        grad_hidden = torch.empty_like(hidden_in) if need_hidden else None
        fp32 = {"dtype": torch.float32, "device": weight.device}
        grad_weight = None  # fp32, from the first chunk's product: no zero-filled buffer to add it to
        grad_bias = torch.zeros(bias.shape, **fp32) if need_bias else None
        buffer = hidden.new_empty((min(chunk_tokens, count), weight.shape[0])) if count else None
        for start in range(0, count, chunk_tokens):
            part = hidden[start : start + chunk_tokens]
            out = buffer[: part.shape[0]]
            if bias is None:
                torch.mm(part, weight.t(), out=out)
            else:
                torch.addmm(bias, part, weight.t(), out=out)
            logits = out.float()  # a copy only for half-precision models
            tanh = None
            if softcap:
                tanh = logits.div_(softcap).tanh_()
                logits = tanh * softcap
            if teacher is None:
                assert targets is not None
                labels = targets[start : start + chunk_tokens]
                rows = torch.arange(labels.numel(), device=labels.device)
                correct += (logits.argmax(dim=-1) == labels).sum()
                target_sum = logits[rows, labels].sum()  # sum over tokens of the target's logit
            else:
                wanted = _teacher_log_probs(teacher, start, chunk_tokens, softcap)
                wanted_probs = wanted.exp()
                # KL = sum p_t (log p_t - log p_s), log p_s = logit - logsumexp, sum p_t = 1
                target_sum = (wanted_probs * logits).sum() - (wanted_probs * wanted).sum()
            top = logits.amax(dim=-1, keepdim=True)
            probs = logits.sub_(top).exp_()  # in place: the buffer now holds exp(logit - max)
            total = probs.sum(dim=-1, keepdim=True)
            loss_sum += (top.squeeze(-1) + total.log().squeeze(-1)).sum() - target_sum
            if not (need_hidden or need_weight or need_bias):
                continue
            grad = probs.div_(total)  # softmax
            if teacher is None:
                grad[rows, labels] -= 1  # d(loss) / d(logits)
            else:
                grad -= wanted_probs
            if tanh is not None:
                grad.mul_(tanh.square_().neg_().add_(1))
            grad = grad.to(weight.dtype)
            if grad_hidden is not None:
                if grad_hidden.dtype == weight.dtype:
                    torch.mm(grad, weight, out=grad_hidden[start : start + chunk_tokens])
                else:
                    grad_hidden[start : start + chunk_tokens] = torch.mm(grad, weight)
            if need_weight:
                if compute is None:
                    if grad_weight is None:
                        grad_weight = torch.mm(grad.t().float(), part.float())
                    else:
                        grad_weight.addmm_(grad.t().float(), part.float())
                else:  # the product in the compute dtype, summed in fp32
                    product = torch.mm(grad.t(), part)
                    grad_weight = product.float() if grad_weight is None else grad_weight.add_(product)
            if grad_bias is not None:
                grad_bias += grad.sum(dim=0, dtype=torch.float32)
        if need_weight and grad_weight is None:  # no tokens
            grad_weight = torch.zeros(weight.shape, **fp32)
        ctx.grads = (grad_hidden,
                     grad_weight.to(master_dtypes[1]) if grad_weight is not None else None,
                     grad_bias.to(master_dtypes[2]) if grad_bias is not None else None)
        ctx.mark_non_differentiable(correct)
        return loss_sum, correct

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_correct: Any) -> tuple[Any, ...]:
        # Handed over, not kept: autograd then stores each as the parameter's .grad without a
        # copy (a vocabulary-sized head gradient is 113 MiB for SmolLM2), and the scale is
        # applied in place. The gradients were computed once, so they can be given once.
        grads, ctx.grads = ctx.grads, None
        if grads is None:
            raise RuntimeError("the fused cross-entropy's backward ran twice; its gradients are given once")
        if not bool(grad_loss == 1):
            grads = tuple(None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in grads)
        return (*grads, None, None, None, None, None, None)


def _teacher_log_probs(teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None], start: int,
                       chunk_tokens: int, softcap: float | None) -> torch.Tensor:
    """The teacher's log-softmax, in fp32, for one chunk of distilled tokens."""
    hidden, weight, bias = teacher
    part = hidden[start : start + chunk_tokens].to(weight.dtype)
    logits = (part @ weight.t() if bias is None else torch.addmm(bias, part, weight.t())).float()
    if softcap:
        logits = logits.div_(softcap).tanh_().mul_(softcap)
    return torch.log_softmax(logits, dim=-1)


_model_sdpa: Any = None
"""transformers' own SDPA attention, which `_packed_sdpa` stands in front of once registered."""

CPU_FP32_ATTENTION_BELOW = 512
"""On a CPU, an example shorter than this attends in fp32 when the model computes in bf16 or
fp16: PyTorch's reduced-precision CPU SDPA (forward and backward) took 1.9-2.7x the time of
the same attention cast to fp32 at 60-150 tokens, the same at 300-600, and less from about
1,200 (bench/README.md, "bf16 on a CPU that has it"). The result is cast back, so the layer's
dtype is unchanged."""


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """SDPA over one example, in fp32 where that is the faster on this device (see above)."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if (query.device.type != "cpu" or query.dtype not in (torch.bfloat16, torch.float16)
            or key.shape[2] >= CPU_FP32_ATTENTION_BELOW):
        return sdpa(query, key, value, **kwargs)
    with torch.autocast("cpu", enabled=False):  # autocast would compute it in bf16 again
        return sdpa(query.float(), key.float(), value.float(), **kwargs).to(query.dtype)


def _packed_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Causal SDPA over each example of a packed row whose bounds come in `cu_seq_lens_q` (the
    name transformers gives packed-sequence bounds); every other call, and anything unusual,
    goes unchanged to transformers' SDPA with the mask it was given."""
    bounds = kwargs.get("cu_seq_lens_q")
    prefix = kwargs.pop("shared_prefix", 0) or 0
    plain = all(kwargs.get(k) is None for k in ("position_bias", "softcap", "s_aux", "sinks", "cache"))
    if (bounds is None or not plain or query.shape[0] != 1 or query.shape[2] != key.shape[2]
            or not getattr(module, "is_causal", True) or getattr(module, "sliding_window", None)):
        if prefix:  # the row holds the prefix once: no masked attention can read it right
            raise RuntimeError("a shared-prefix row reached an attention layer that cannot take it")
        return _model_sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                           **kwargs)
    cuts = bounds.tolist()
    gqa = query.shape[1] != key.shape[1]
    parts = []
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        if index == 0 or not prefix:
            parts.append(_attend(query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                 dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa))
            continue
        # An example after a shared prefix: its queries see the whole prefix, then causally itself.
        keys = torch.cat([key[:, :, :prefix], key[:, :, start:end]], dim=2)
        values = torch.cat([value[:, :, :prefix], value[:, :, start:end]], dim=2)
        mask = torch.ones(end - start, prefix + end - start, dtype=torch.bool, device=query.device)
        parts.append(_attend(query[:, :, start:end], keys, values, attn_mask=mask.tril_(prefix),
                             dropout_p=dropout, scale=scaling, enable_gqa=gqa))
    # [batch, length, heads, dim], as transformers' SDPA returns it
    return torch.cat([part.transpose(1, 2) for part in parts], dim=1), None


def _register_packed_attention() -> None:
    global _model_sdpa
    if _model_sdpa is None:
        from transformers import AttentionInterface
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        _model_sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
        AttentionInterface.register("sdpa", _packed_sdpa)


def _packed_bounds(config: Any, position_ids: torch.Tensor | None,
                   attention_mask: torch.Tensor | None, shared_prefix: int = 0) -> torch.Tensor | None:
    """Example boundaries of a single packed row, when per-example attention gives exactly the
    model's own result: SDPA, full causal attention in every layer, no padding mask. A row with
    a shared prefix is cut at the prefix's end and at every example after it."""
    if position_ids is None or attention_mask is not None or position_ids.shape[0] != 1:
        return None
    if getattr(config, "_attn_implementation", None) != "sdpa" or getattr(config, "sliding_window", None):
        return None
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    if any(t != "full_attention" for t in layer_types) or getattr(config, "attn_logit_softcapping", None):
        return None
    if shared_prefix:
        starts = torch.cat([torch.zeros(1, dtype=torch.long, device=position_ids.device),
                            (position_ids[0] == shared_prefix).nonzero().flatten()])
    else:
        starts = (position_ids[0] == 0).nonzero().flatten()
    if starts.numel() < 2 or int(starts[0]) != 0:
        return None
    end = torch.tensor([position_ids.shape[1]], device=starts.device)
    return torch.cat([starts, end]).to(torch.int32)


def _autocast_dtype(tensor: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast computes matrix products in on this tensor's device, or None."""
    kind = tensor.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def _takes_kwargs(module: torch.nn.Module) -> bool:
    params = inspect.signature(module.forward).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def shares_prefix(model: torch.nn.Module) -> bool:
    """Whether this model can take a row whose shared prefix is held once (data/pack.py):
    it must use tunesmith's per-example SDPA, the only attention that reads such a row."""
    lm = causal_lm(model)
    probe = torch.tensor([[0, 1]])  # a prefix of one token, then one example
    return _packed_bounds(lm.config, probe, None, 1) is not None and _takes_kwargs(lm.get_decoder())


def hidden_states(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                  attention_mask: torch.Tensor | None = None, shared_prefix: int = 0) -> torch.Tensor:
    lm = causal_lm(model)
    decoder = lm.get_decoder()
    extra: dict[str, Any] = {}
    bounds = _packed_bounds(lm.config, position_ids, attention_mask, shared_prefix)
    if shared_prefix and (bounds is None or not _takes_kwargs(decoder)):
        raise ValueError("this model cannot take a shared-prefix row; unshare the batch first")
    if bounds is not None and _takes_kwargs(decoder):
        _register_packed_attention()
        # Passed down to every attention call, also when gradient checkpointing recomputes a layer.
        extra = {"cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds}
        if shared_prefix:
            extra["shared_prefix"] = shared_prefix
    embedded = _tied_embedding_lookup(lm, input_ids)
    inputs = {"input_ids": input_ids} if embedded is None else {"inputs_embeds": embedded}
    # use_cache=False matters: transformers splits a packed row into its examples (from the
    # restarting position ids) only when no KV cache is built; with one, examples would
    # attend to each other silently.
    out = decoder(**inputs, position_ids=position_ids, attention_mask=attention_mask, use_cache=False,
                  **extra)
    return out.last_hidden_state


def _tied_embedding_lookup(lm: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor | None:
    """The token embeddings of a CPU training step whose input embedding is the trained output
    head (tied weights, full fine-tuning), with the embedding's gradient rows added in place to
    the head's gradient; None where the model's own lookup must run.

    PyTorch's embedding backward builds a dense vocabulary-sized gradient (a zero fill of 113 MiB
    for SmolLM2, freshly paged in every step) only for autograd to add it to the head's gradient
    of the same shape. The fused loss has handed the head's gradient to `.grad` by the time the
    embedding's gradient arrives, so the few rows the step's tokens touch are added there instead.
    The sum does not depend on that order (`_add_embedding_rows` starts `.grad` when it is not yet
    there, and autograd then adds the head's into it). Only on one CPU process: DDP and FSDP reduce
    each `.grad` as autograd accumulates it, which this addition would bypass. Not where a hook
    watches or changes the embedding's output (the module is not called here)."""
    embedding = lm.get_input_embeddings()
    head = lm.get_output_embeddings()
    weight = getattr(embedding, "weight", None)
    if (type(embedding) is not torch.nn.Embedding or _has_hooks(embedding) or head is None or weight is None
            or head.weight is not weight or not (torch.is_grad_enabled() and weight.requires_grad)
            or weight.device.type != "cpu" or embedding.max_norm is not None
            or embedding.scale_grad_by_freq or embedding.sparse
            or (torch.distributed.is_available() and torch.distributed.is_initialized())):
        return None
    embedded = torch.nn.functional.embedding(input_ids, weight.detach(), embedding.padding_idx)
    embedded.requires_grad_()
    embedded.register_hook(functools.partial(_add_embedding_rows, weight, input_ids, embedding.padding_idx))
    return embedded


def _has_hooks(module: torch.nn.Module) -> bool:
    """Whether calling `module` would run any hook: the test PyTorch's own `Module._call_impl`
    makes (private names, as no public API tells)."""
    hooks = torch.nn.modules.module
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or hooks._global_forward_hooks
                or hooks._global_forward_pre_hooks or hooks._global_backward_hooks
                or hooks._global_backward_pre_hooks)


def _add_embedding_rows(weight: torch.nn.Parameter, input_ids: torch.Tensor, padding_idx: int | None,
                        grad: torch.Tensor) -> None:
    rows, ids = grad.reshape(-1, grad.shape[-1]), input_ids.reshape(-1)
    if padding_idx is not None:  # as nn.Embedding: the padding row gets no gradient
        keep = ids != padding_idx
        rows, ids = rows[keep], ids[keep]
    if weight.grad is None:
        weight.grad = torch.zeros_like(weight)
    weight.grad.index_add_(0, ids, rows.to(weight.grad.dtype))


def predicting_states(hidden: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None,
              shared_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states that predict each set label, and where the labels are set (on
    `labels[:, 1:]`), in row order; in a shared-prefix row an example's first token is
    predicted from the prefix's last position. The one home of that mapping (SFT, evaluation,
    log-probs for preference and RL)."""
    keep = labels[:, 1:] != IGNORE_INDEX
    if shared_prefix:
        assert position_ids is not None  # a shared-prefix row always has them
        source = torch.arange(-1, labels.shape[1] - 1, device=labels.device)
        source[position_ids[0] == shared_prefix] = shared_prefix - 1
        return hidden[0, source[1:][keep[0]]], keep
    return hidden[:, :-1][keep], keep


def token_loss(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
               position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
               chunk_tokens: int = 1024, shared_prefix: int = 0, distill: torch.Tensor | None = None,
               teacher: Teacher | None = None) -> TokenLoss:
    """Summed cross-entropy and correct-token count over positions whose label is set.

    `labels` are aligned with `input_ids` (label t is predicted from position t-1; in a row with
    a shared prefix of P tokens, an example's first token after it from position P-1). Where
    `distill` (aligned with `labels`) is set, the target is the `teacher`'s distribution instead
    of the label, and the loss there is KL(teacher || model) (`kl_sum`).
    """
    hidden = hidden_states(model, input_ids, position_ids, attention_mask, shared_prefix)
    selected, keep = predicting_states(hidden, labels, position_ids, shared_prefix)
    targets = labels[:, 1:][keep]
    head = causal_lm(model).get_output_embeddings()
    softcap = getattr(causal_lm(model).config, "final_logit_softcapping", None)
    tile = max(1, min(chunk_tokens, TILE_LOGITS // head.weight.shape[0]))
    grads = torch.is_grad_enabled()
    kl_sum, distilled = None, 0
    if distill is not None:
        soft = distill[:, 1:][keep]
        distilled = int(soft.sum())
        if teacher is None or teacher.hidden.shape[0] != distilled:
            raise ValueError("distilled targets need the teacher's hidden state at each of them")
        taught = (teacher.hidden, teacher.head.weight, teacher.head.bias)
        kl_sum, _ = _LinearCrossEntropy.apply(selected[soft], head.weight, head.bias, None, softcap, tile,
                                              grads, _autocast_dtype(selected), taught)
        selected, targets = selected[~soft], targets[~soft]
    loss_sum, correct = _LinearCrossEntropy.apply(selected, head.weight, head.bias, targets, softcap, tile,
                                                  grads, _autocast_dtype(selected))
    return TokenLoss(loss_sum, correct, int(targets.numel()), kl_sum, distilled)


def teacher_states(reference: torch.nn.Module, batch: PackedBatch) -> Teacher:
    """The reference model's hidden states at a packed batch's distilled targets, from a forward
    over only the examples that hold them (`PackedBatch.distilled_only`)."""
    part = batch.distilled_only()
    hidden = hidden_states(reference, part.input_ids, part.position_ids, shared_prefix=part.shared_prefix)
    selected, keep = predicting_states(hidden, part.labels, part.position_ids, part.shared_prefix)
    assert part.distill is not None
    return Teacher(selected[part.distill[:, 1:][keep]], causal_lm(reference).get_output_embeddings())


@torch.no_grad()
def example_losses(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                   position_ids: torch.Tensor, lengths: list[int], chunk_tokens: int = 1024,
                   shared_prefix: int = 0) -> list[tuple[float, int, int]]:
    """(summed loss, correct tokens, trained tokens) of each example of one packed row, from a
    single forward: the same numbers as `token_loss` on each example alone, since examples in
    a packed row attend only to themselves (and a shared prefix, held once: `lengths` are the
    examples' own, prefix included) and each is scored on its own targets."""
    hidden = hidden_states(model, input_ids, position_ids, shared_prefix=shared_prefix)
    selected, keep = predicting_states(hidden, labels, position_ids, shared_prefix)
    targets = labels[:, 1:][keep]
    in_row = [lengths[0], *(length - shared_prefix for length in lengths[1:])]
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=labels.device),
                                    torch.tensor(in_row, device=labels.device))
    owner = owner[1:][keep[0]]  # the example each scored target belongs to
    head = causal_lm(model).get_output_embeddings()
    softcap = getattr(causal_lm(model).config, "final_logit_softcapping", None)
    tile = max(1, min(chunk_tokens, TILE_LOGITS // head.weight.shape[0]))
    out = []
    for index in range(len(lengths)):
        mine = owner == index
        loss_sum, correct = _LinearCrossEntropy.apply(selected[mine], head.weight, head.bias, targets[mine],
                                                      softcap, tile, False, _autocast_dtype(hidden))
        out.append((float(loss_sum), int(correct), int(mine.sum())))
    return out
