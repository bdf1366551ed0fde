"""Training where only PyTorch is installed, without the rest of crowdpatch's command line.

`torchrun --nproc_per_node N -m crowdpatch.train PROJECT ...` runs the `train` command, one process
per rank. `python -m crowdpatch.train experiment --tensors FILE ...` runs the guide comparison on a
GPU machine that has PyTorch (with typer, rich and matplotlib) but not the server's packages: the
file comes from `crowdpatch experiment PROJECT --export-tensors FILE` on the machine with the study.
"""

import sys

import typer

from crowdpatch.train.commands import experiment, train

if len(sys.argv) > 1 and sys.argv[1] == "experiment":
    del sys.argv[1]
    typer.run(experiment)
else:
    typer.run(train)
