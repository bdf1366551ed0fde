"""`crowdpatch export-onnx`: write the CSNet backend as an ONNX file for the `onnx` backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("export-onnx")
    def export_onnx_command(
        weights: Annotated[
            Path, typer.Option(help="Official CSNet checkpoint (e.g. csnet-L-x2.pth.tar; not shipped).")
        ],
        out: Annotated[Path, typer.Option(help="ONNX file to write.")],
        layer_config: Annotated[
            Optional[Path], typer.Option(help="Layout JSON (default: <checkpoint>.layer_config.json next to it).")
        ] = None,
        input_size: Annotated[int, typer.Option(help="Square input size in px (a multiple of 16).")] = 224,
    ) -> None:
        """Export CSNet to ONNX (input `image` N x 3 x S x S ImageNet-normalised, output `logits`);
        use it with --saliency onnx --weights OUT."""
        from crowdpatch.saliency.csnet import export_onnx

        try:
            path = export_onnx(weights, out, layer_config=layer_config, input_size=input_size)
        except (ValueError, ImportError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1)
        typer.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB); use: --saliency onnx --weights {path}")
