"""`torchrun --nproc_per_node N -m crowdpatch.train PROJECT ...`: the `train` command, one process per rank."""

import typer

from crowdpatch.train.commands import train

typer.run(train)
