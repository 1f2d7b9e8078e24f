"""A two-scale flow built from flowkit layers, checked, then fitted for a few steps."""
import torch

import flowkit
from flowkit.layers import ActNorm, AffineCoupling, ConvSubnet, InvConv1x1, Squeeze


def step(c):  # one flow step: normalize, mix channels, couple
    return [ActNorm(c), InvConv1x1(c), AffineCoupling(c, lambda i, o: ConvSubnet(i, o, 32))]

flow = flowkit.Sequential(
    Squeeze(2), *step(12), *step(12),                # 3x16x16 -> 12x8x8
    flowkit.Split([6, 6]),                           # half leaves at the fine scale
    flowkit.Parallel(flowkit.Identity(), flowkit.Sequential(Squeeze(2), *step(24))),
    memory_saving=True,                              # activations rebuilt in backward
)
x = torch.rand(16, 3, 16, 16)
print(flowkit.testing.check_flow(flow, x[:2, :, :4, :4].double()).checked)
model = flowkit.NormalizingFlow(flow)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for _ in range(20):
    loss = -model.log_prob(x).mean() / x[0].numel()  # nats per dimension
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"nats/dim after 20 steps: {loss.item():.3f}")
