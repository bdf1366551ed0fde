"""Dataset adapters: turn a user's images, labels and masks (or the built-in benchmark) into records."""

from crowdpatch.datasets.folder import (
    IMAGE_EXTENSIONS,
    DatasetError,
    DatasetLoad,
    ImageRecord,
    InputProblem,
    load_folder_dataset,
)
from crowdpatch.datasets.images import (
    MASK_BACKGROUND,
    MASK_IGNORE,
    MASK_OBJECT,
    ImageLoadError,
    image_size,
    load_mask,
    load_rgb,
)
from crowdpatch.datasets.synthetic import (
    BACKGROUNDS,
    CLASSES,
    BenchmarkSpec,
    CutoutPool,
    CutoutSource,
    Scene,
    generate_benchmark,
    plan_benchmark,
    render_background,
    render_procedural_object,
    render_scene,
)

__all__ = [
    "BACKGROUNDS",
    "CLASSES",
    "IMAGE_EXTENSIONS",
    "MASK_BACKGROUND",
    "MASK_IGNORE",
    "MASK_OBJECT",
    "BenchmarkSpec",
    "CutoutPool",
    "CutoutSource",
    "DatasetError",
    "DatasetLoad",
    "ImageLoadError",
    "ImageRecord",
    "InputProblem",
    "Scene",
    "generate_benchmark",
    "image_size",
    "load_folder_dataset",
    "load_mask",
    "load_rgb",
    "plan_benchmark",
    "render_background",
    "render_procedural_object",
    "render_scene",
]
