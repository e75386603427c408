"""Every threshold and window the tuning tips use, in one place.

The numbers of the fixes and the targets are the guide's ("Hyperparameter Tuning Tips" and
"Validation Metrics" of 32x32-vlr-optimization-guide.md); the detection thresholds are this
project's choices and are documented field by field below.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    # -- low accuracy ---------------------------------------------------------------------
    low_accuracy: float = 0.50            # rank-1 (eval.json, DSR row) or val top-1 below this fraction
    camera_rank1_gap: float = 0.25        # camera probes: DSR rank-1 this far under HR probes' (a fraction)
    min_epochs_to_judge: int = 3          # val top-1 is judged only once a fine-tuning stage has this many
                                          # val epochs (early epochs are always low)
    # -- overfitting ----------------------------------------------------------------------
    overfit_epochs: int = 3               # val loss rose at each of the last N epoch-to-epoch steps
                                          # while train loss fell over the same N steps (N+1 epochs)
    overfit_min_val_rise: float = 0.01    # ... and the val rise over those steps is >= 1 % of its start
    overfit_top1_gap: float = 0.20        # or train top-1 minus val top-1 (fractions) at the last epoch
                                          # of a fine-tuning stage is >= 20 points
    # -- instability ----------------------------------------------------------------------
    spike_factor: float = 4.0             # a loss above 4x the median of the epochs before it ...
    spike_window: int = 5                 # ... taken over at most the 5 previous epochs ...
    spike_min_history: int = 3            # ... and at least 3 of them, is a spike
    oscillation_window: int = 7           # the last 7 val values of the watched metric (DSR: psnr,
                                          # fine-tuning: top1) ...
    oscillation_min_flips: int = 4        # ... change direction at least 4 times (of at most 5) ...
    oscillation_min_swing: float = 0.02   # ... with a mean step of >= 2 % of their mean magnitude
    # -- DSR against its bicubic baseline --------------------------------------------------
    psnr_below_bicubic: float = 1.0       # best DSR val PSNR more than 1 dB under bicubic: the DSR is broken
                                          # (typically a learning rate far too high), judged from 1 val epoch
    min_psnr_gain: float = 0.5            # best DSR val PSNR less than 0.5 dB above bicubic after
                                          # min_epochs_to_judge val epochs: the DSR adds nothing
    # -- out of memory --------------------------------------------------------------------
    oom_dsr_batch: int = 12               # the guide's "If OOM Occurs" DSR batch size
    oom_finetune_batch: int = 24          # the guide's "If OOM Occurs" fine-tuning batch size
    oom_step_down: float = 0.75           # at or below those: 3/4 of the current batch, rounded down, >= 1


THRESHOLDS = Thresholds()


def trend_epochs(th: Thresholds = THRESHOLDS) -> list[tuple[int, str]]:
    """(epochs a stage needs, what the rules judge then) of the rules that read a trend, fewest first.

    A shorter run cannot trigger them, so "no tips" then means "too early to tell", not "all is well".
    """
    needs: dict[int, list[str]] = {}
    for epochs, what in ((th.min_epochs_to_judge, "DSR gain over bicubic, low val top-1"),
                         (th.spike_min_history + 1, "loss spikes"),
                         (th.overfit_epochs + 1, "overfitting"),
                         (th.oscillation_window, "oscillation")):
        needs.setdefault(epochs, []).append(what)
    return [(epochs, ", ".join(whats)) for epochs, whats in sorted(needs.items())]

# Target sets of the guide's "Validation Metrics". A preset whose VLR images are at least
# LARGE_VLR_MIN_SIDE pixels on both sides gets the 32x32 targets; smaller ones (14x16, 16x16)
# get the values the guide gives in parentheses ("vs ... with 16x16").
LARGE_VLR_MIN_SIDE = 24

TARGETS_32 = {"psnr": 28.0, "identity": 0.12, "feature_match": 0.08, "l1": 0.04,
              "stage1": 0.80, "stage2": 0.88, "final": 0.90}
TARGETS_14 = {"psnr": 26.0, "identity": 0.15, "feature_match": 0.10, "l1": 0.05,
              "stage1": 0.75, "stage2": 0.82, "final": 0.85}


def large_vlr(vlr_width: int, vlr_height: int) -> bool:
    return min(vlr_width, vlr_height) >= LARGE_VLR_MIN_SIDE


def target_set_name(vlr_width: int, vlr_height: int) -> str:
    """``"32x32"`` for VLR images of at least LARGE_VLR_MIN_SIDE on both sides; for smaller ones the
    preset's own size (``"14x16"``, ``"16x16"``), naming the guide's small set when it is another size."""
    if large_vlr(vlr_width, vlr_height):
        return "32x32"
    size = f"{vlr_width}x{vlr_height}"
    return size if size in ("14x16", "16x16") else f"{size}, the guide's 14x16/16x16"


def target_values(vlr_width: int, vlr_height: int) -> dict[str, float]:
    return TARGETS_32 if large_vlr(vlr_width, vlr_height) else TARGETS_14
