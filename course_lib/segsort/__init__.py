"""SegSort (Hwang et al., "SegSort: Segmentation by Discriminative Sorting of Segments", ICCV 2019).

Pixel embeddings on the unit hypersphere, clustered into segments by von Mises-Fisher k-means ("pixel
sorting"), trained with a softmax over segments ("segment sorting"), labelled by retrieving similar
training segments. Lesson 07 teaches it.

- :mod:`.network`: the embedding networks (toy CNN, dilated ResNet + pyramid pooling), ``embed``, checkpoints.
- :mod:`.vmf`: grid initialisation, vMF clustering of [embedding; y; x], segment ids and prototypes.
- :mod:`.priors`: superpixel over-segmentations (the substitute for HED-owt-ucm) and region-PNG loaders.
- :mod:`.loss`: the unsupervised and supervised segment-sorting losses, the prototype memory.
- :mod:`.retrieval`: kNN retrieval over purified training prototypes; the label-free variant.
- :mod:`.train`: ``python -m course_lib.segsort.train --profile toy --out DIR`` (import it from the submodule).
- :mod:`.figures`: the figures of lesson 07 and its pixel-sorting slider (import it from the submodule).
"""
from .loss import (
    CONCENTRATION,
    PrototypeMemory,
    segment_sort_loss,
    split_segments_by_class,
    supervised_segment_sort_loss,
)
from .network import (
    EMBEDDING_DIM,
    TOY_CHECKPOINT,
    ResNetEmbeddingNet,
    ToyEmbeddingNet,
    build_embedding_net,
    embed,
    load_embedding_net,
    save_embedding_net,
)
from .priors import (
    felzenszwalb_segments,
    read_segment_png,
    segment_purity,
    segments_from_ucm,
    slic_segments,
    superpixels,
)
from .retrieval import (
    K_NEAREST,
    LabelFreeSegments,
    SegmentBatch,
    SegmentRetrieval,
    knn_vote,
    nearest_prototypes,
    purified_prototypes,
    resize_ids,
    segment_images,
)
from .vmf import (
    batch_segment_ids,
    clustering_features,
    grid_segments,
    location_features,
    segment_prototypes,
    vmf_cluster,
)

__all__ = [
    "CONCENTRATION", "EMBEDDING_DIM", "K_NEAREST", "LabelFreeSegments", "PrototypeMemory", "ResNetEmbeddingNet",
    "SegmentBatch", "SegmentRetrieval", "TOY_CHECKPOINT", "ToyEmbeddingNet", "batch_segment_ids",
    "build_embedding_net", "clustering_features", "embed", "felzenszwalb_segments", "grid_segments", "knn_vote",
    "load_embedding_net", "location_features", "nearest_prototypes", "purified_prototypes", "read_segment_png",
    "resize_ids", "save_embedding_net", "segment_images", "segment_prototypes", "segment_purity",
    "segment_sort_loss", "segments_from_ucm", "slic_segments", "split_segments_by_class", "superpixels",
    "supervised_segment_sort_loss", "vmf_cluster",
]
