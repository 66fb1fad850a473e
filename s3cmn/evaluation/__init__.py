"""Evaluation: sliding-window perplexity (token, word, bits per byte), spike sparsity, memory statistics, speed,
size and peak memory, reports and plots. ``s3cmn-eval`` is the command-line front end.

    from s3cmn.evaluation import evaluate_checkpoint, write_reports
    report = evaluate_checkpoint("runs/s3cmn/best", DataConfig(data_dir=...), EvalConfig(memory="both"))
    write_reports(report, "reports/", plot_dir="reports/plots")

Names are imported lazily (PEP 562), so ``import s3cmn.evaluation`` stays light.
"""

from __future__ import annotations

from s3cmn.utils.lazy import lazy_exports

_EXPORTS = {
    "evaluate_checkpoint": "s3cmn.evaluation.run",
    "EvaluationError": "s3cmn.evaluation.errors",
    "score_stream": "s3cmn.evaluation.perplexity",
    "sliding_windows": "s3cmn.evaluation.perplexity",
    "prepare_text": "s3cmn.evaluation.perplexity",
    "nll_summary": "s3cmn.evaluation.perplexity",
    "StreamScore": "s3cmn.evaluation.perplexity",
    "layer_sparsity": "s3cmn.evaluation.sparsity",
    "model_sparsity": "s3cmn.evaluation.sparsity",
    "LayerSparsity": "s3cmn.evaluation.sparsity",
    "measure_speed": "s3cmn.evaluation.speed",
    "PeakMemory": "s3cmn.evaluation.speed",
    "write_reports": "s3cmn.evaluation.report",
    "render_markdown": "s3cmn.evaluation.report",
    "write_plots": "s3cmn.evaluation.plots",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
