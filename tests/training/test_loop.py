"""The shared step core: one optimiser step equals the hand-written sequence."""

from __future__ import annotations

import torch

from evspec.training.loop import apply_gradients, due


def _setup(seed: int):
    torch.manual_seed(seed)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return net, opt, sched


def test_apply_gradients_is_backward_clip_step_schedule() -> None:
    x = torch.randn(8, 4)
    net, opt, sched = _setup(0)
    ref, ref_opt, ref_sched = _setup(0)
    reduced = []
    for _ in range(3):
        apply_gradients(net(x).pow(2).sum(), opt, list(net.parameters()), 0.5, scheduler=sched,
                        reduce=reduced.append)
        ref(x).pow(2).sum().backward()
        torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.5)
        ref_opt.step()
        ref_sched.step()
        ref_opt.zero_grad(set_to_none=True)
    assert len(reduced) == 3 and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), ref.parameters()))
    assert sched.get_last_lr() == ref_sched.get_last_lr()


def test_due_every_n_steps_and_at_the_end() -> None:
    assert [s for s in range(1, 11) if due(s, 4)] == [4, 8]
    assert [s for s in range(1, 11) if due(s, 4, last=s == 10)] == [4, 8, 10]
