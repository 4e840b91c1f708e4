"""One process of tests/test_speed.py's global-Gram test (launched by torch.distributed.run with gloo)."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.testing_utils
from tests.testing_utils import tiny_batch, tiny_student  # noqa: E402

from infosam_hf import InfoSAMConfig, InfoSAMTrainer  # noqa: E402

out = Path(sys.argv[1])
results = {}
for mode in ("global", "local"):
    args = InfoSAMConfig(output_dir=str(out / mode), report_to="none", use_cpu=True, ddp_backend="gloo",
                         teacher_cache="off", info_loss_batch=mode)
    trainer = InfoSAMTrainer(model=tiny_student(), args=args)
    rank, world = dist.get_rank(), dist.get_world_size()
    full = tiny_batch(4, seed=0)
    rows = slice(rank * 4 // world, (rank + 1) * 4 // world)
    batch = {key: value[rows] for key, value in full.items()}
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    values = torch.stack([loss.detach(), trainer._component_sums["loss_r"], trainer._component_sums["loss_d"]])
    dist.all_reduce(values)
    grads = {}
    for name, param in model.named_parameters():  # what DDP does: the mean of the processes' gradients
        if param.grad is not None:
            dist.all_reduce(param.grad)
            grads[name] = param.grad / world
    results[mode] = {"loss": values[0] / world, "loss_r": values[1] / world, "loss_d": values[2] / world,
                     "grads": grads}
if dist.get_rank() == 0:
    torch.save(results, out / "results.pt")
