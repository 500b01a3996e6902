"""SAE-Track analysis (arXiv 2412.17626): a series of SAEs, one per model checkpoint, each
initialised from the previous one. Numpy only (checkpoints read with ``safetensors.numpy``).

    from sae_report.track import read_manifest, analyze_series
    from sae_report.report.track import write_track_report
    analysis = analyze_series(read_manifest("out/track/series.json"))
    write_track_report(analysis, "out/track")
"""

from .drift import Drift, DriftPhase, DriftStats, Lifecycle, compute_drift, lifecycle, segment_levels
from .matching import Matching, cosine_matrix, match_by_assignment, match_by_index
from ..runlog.track_manifest import SeriesEntry, SeriesManifest, read_manifest, write_manifest
from .speedup import SpeedUp, measure_speedup, tokens_to_reach
from .study import CheckpointSummary, PairMatch, TrackAnalysis, analyze_series, write_track_json
from .weights import SAEWeights, load_weights

__all__ = [
    "CheckpointSummary", "Drift", "DriftPhase", "DriftStats", "Lifecycle", "Matching", "PairMatch", "SAEWeights",
    "SeriesEntry", "SeriesManifest", "SpeedUp", "TrackAnalysis", "analyze_series", "compute_drift", "cosine_matrix",
    "lifecycle", "load_weights", "match_by_assignment", "match_by_index", "measure_speedup", "read_manifest",
    "segment_levels", "tokens_to_reach", "write_manifest", "write_track_json",
]

