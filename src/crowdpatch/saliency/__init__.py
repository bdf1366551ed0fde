"""Step 1: saliency maps from interchangeable backends, and the clusters workers verify.

Importing this package registers the built-in backends (``spectral``, ``finegrained``, ``gt``, and
``csnet`` / ``onnx``, which import PyTorch / onnxruntime only when built with ``--weights``),
so ``create_backend(config.saliency.backend)`` works without importing them by hand.
"""

from crowdpatch.saliency.base import (
    SaliencyBackend,
    available_backends,
    backend_from_config,
    create_backend,
    normalize_unit,
    register_backend,
)
from crowdpatch.saliency.clusters import Cluster, clusters_from_config, extract_clusters, resolve_threshold
from crowdpatch.saliency.csnet import CSNetBackend
from crowdpatch.saliency.onnx_backend import ONNXBackend
from crowdpatch.saliency.opencv_static import FineGrainedBackend, OpenCVStaticBackend, SpectralResidualBackend
from crowdpatch.saliency.oracle import GroundTruthBackend

__all__ = [
    "CSNetBackend",
    "Cluster",
    "FineGrainedBackend",
    "GroundTruthBackend",
    "ONNXBackend",
    "OpenCVStaticBackend",
    "SaliencyBackend",
    "SpectralResidualBackend",
    "available_backends",
    "backend_from_config",
    "clusters_from_config",
    "create_backend",
    "extract_clusters",
    "normalize_unit",
    "register_backend",
    "resolve_threshold",
]
