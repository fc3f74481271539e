"""A user's training script: plain PyTorch plus the two collapsewatch lines.

Server, project and run name come from COLLAPSEWATCH_* environment variables.
Usage: python train_mlp.py LR STEPS
"""

import sys

import torch
from torch import nn

import collapsewatch

lr, steps = float(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=lr)
criterion = nn.MSELoss()
collapsewatch.watch(model, optimizer=optimizer, criterion=criterion, every=5)

x = torch.randn(512, 20)
y = torch.sin(x[:, :1] * 2) + x[:, 1:2] ** 2
for _step in range(steps):
    idx = torch.randint(0, 512, (64,))
    optimizer.zero_grad()
    loss = criterion(model(x[idx]), y[idx])
    loss.backward()
    optimizer.step()
print("training done", flush=True)
