"""The one exception tree of edgec.

Every message names the file, node or value at fault and says what to do. The CLI prints the message on one
line and exits with the class's ``exit_code``; ``--debug`` shows the traceback.

::

    EdgecError                       exit 1
    ├── UsageError                   exit 2   a bad option value or combination
    ├── InputError                   exit 3   a file the user gave is missing, of the wrong kind or corrupt
    │   ├── SourceModelError                  a model front-end could not load or lower the source
    │   ├── CalibrationDataError              calibration / evaluation data do not fit the model
    │   └── UnsafeInputError                  refused because loading it would run arbitrary code
    ├── TargetError                  exit 4   an unknown target or an invalid profile
    ├── CompileError                 exit 5   a pass, conversion or emitter failed
    │   ├── VerificationError                 outputs differ from the source beyond tolerance
    │   ├── AccuracyBudgetError               the accuracy guard could not meet --max-accuracy-drop
    │   └── ResourceLimitError                the model does not fit the target's RAM or storage
    ├── BundleError                  exit 6   a bundle is missing files, tampered with or of another schema
    ├── RuntimeMissingError          exit 7   the runtime a bundle needs is not installed (says how to install it)
    ├── DeviceError                  exit 8   a device could not be reached, refused us, or failed a step
    │   ├── HostKeyError                      unknown or changed host key
    │   ├── TransferError                     a push stalled, broke off or found no space
    │   └── DeviceTimeoutError                a step on the device did not finish in time
    ├── ResultsError                 exit 9   the results database is unreadable or of a newer schema
    └── ClusterError                 exit 10  a Ray cluster could not be reached or lost the work it was given
"""

from __future__ import annotations

__all__ = [
    "AccuracyBudgetError",
    "BundleError",
    "CalibrationDataError",
    "ClusterError",
    "CompileError",
    "DeviceError",
    "DeviceTimeoutError",
    "EdgecError",
    "HostKeyError",
    "InputError",
    "ResourceLimitError",
    "ResultsError",
    "RuntimeMissingError",
    "SourceModelError",
    "TargetError",
    "TransferError",
    "UnsafeInputError",
    "UsageError",
    "VerificationError",
]


class EdgecError(Exception):
    """Base of every error edgec raises on purpose."""

    exit_code = 1


class UsageError(EdgecError):
    exit_code = 2


class InputError(EdgecError):
    exit_code = 3


class SourceModelError(InputError):
    pass


class CalibrationDataError(InputError):
    pass


class UnsafeInputError(InputError):
    pass


class TargetError(EdgecError):
    exit_code = 4


class CompileError(EdgecError):
    exit_code = 5


class VerificationError(CompileError):
    pass


class AccuracyBudgetError(CompileError):
    pass


class ResourceLimitError(CompileError):
    pass


class BundleError(EdgecError):
    exit_code = 6


class RuntimeMissingError(EdgecError):
    exit_code = 7


class DeviceError(EdgecError):
    exit_code = 8


class HostKeyError(DeviceError):
    pass


class TransferError(DeviceError):
    pass


class DeviceTimeoutError(DeviceError):
    pass


class ResultsError(EdgecError):
    exit_code = 9


class ClusterError(EdgecError):
    exit_code = 10
