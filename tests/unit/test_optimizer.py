"""Training's AdamW: fused on the CPU, with the same update and state as PyTorch's default loop,
so a fused run trains as before and resumes from a checkpoint either one wrote."""

from __future__ import annotations

import torch

from tunesmith.train.optimizer import adamw, keep_fused


def _weights() -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(64, 32), (32,), (7, 5, 3)]
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]


def _gradients(steps: int) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [[torch.randn(p.shape, generator=generator) for p in _weights()] for _ in range(steps)]


def _run(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
         grads: list[list[torch.Tensor]]) -> None:
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_training_adamw_is_fused_on_the_cpu_and_updates_like_the_default_loop() -> None:
    grads = _gradients(5)
    fused_params, loop_params = _weights(), _weights()
    fused = adamw(fused_params, lr=1e-2, weight_decay=0.1)
    loop = torch.optim.AdamW(loop_params, lr=1e-2, weight_decay=0.1)
    assert fused.param_groups[0]["fused"] is True and not loop.param_groups[0]["fused"]
    _run(fused, fused_params, grads)
    _run(loop, loop_params, grads)
    assert ((fused_params[0] - _weights()[0]).abs() > 1e-6).all()  # every weight moved
    for a, b in zip(fused_params, loop_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(fused.state[a][key], loop.state[b][key], rtol=1e-6, atol=1e-9)
        assert float(fused.state[a]["step"]) == float(loop.state[b]["step"]) == 5


def test_a_resumed_run_stays_fused_whichever_adamw_wrote_its_checkpoint() -> None:
    """Loading a state replaces the group settings with the saved ones; `keep_fused` puts the
    choice back, and the run continues exactly where an uninterrupted one goes."""
    grads = _gradients(6)
    reference_params = _weights()
    _run(torch.optim.AdamW(reference_params, lr=1e-2), reference_params, grads)

    params = _weights()
    first = torch.optim.AdamW(params, lr=1e-2)  # a checkpoint of the default loop
    _run(first, params, grads[:3])
    resumed = adamw(params, lr=1e-2, weight_decay=0.01)
    resumed.load_state_dict(first.state_dict())
    assert not resumed.param_groups[0]["fused"]  # what loading alone does
    keep_fused(resumed)
    assert resumed.param_groups[0]["fused"] is True
    _run(resumed, params, grads[3:])
    for a, b in zip(params, reference_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)

    back = torch.optim.AdamW(_weights(), lr=1e-2)  # and a fused checkpoint loads into the loop
    back.load_state_dict(resumed.state_dict())
    keep_fused(back)
    assert not back.param_groups[0]["fused"]
    assert all(float(s["step"]) == 6 for s in back.state.values())
