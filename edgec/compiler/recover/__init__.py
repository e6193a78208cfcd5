"""Recovery after pruning: fit the pruned model to the float model on unlabelled calibration samples."""

from edgec.compiler.recover.distill import RecoveryResult, recover

__all__ = ["RecoveryResult", "recover"]
