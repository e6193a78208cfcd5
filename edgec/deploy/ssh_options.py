"""Where and how to connect to a device over SSH: plain dataclasses, importable without paramiko.

``SshOptions`` holds the one set of SSH defaults (timeouts, retries, trust); the command line reads its defaults
from here, and ``edgec.deploy.ssh`` opens connections with it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SshOptions", "SshTarget"]


@dataclass(frozen=True)
class SshTarget:
    """Where to connect: what the user or the inventory said; blanks are filled from ~/.ssh/config."""

    host: str
    port: int | None = None
    user: str | None = None
    key: str | None = None
    name: str | None = None  # the inventory name, used in messages

    @property
    def label(self) -> str:
        address = f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"
        return f"{self.name} ({address})" if self.name and self.name != self.host else address


@dataclass(frozen=True)
class SshOptions:
    """Timeouts (seconds), retry policy and trust settings for every connection."""

    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    stall_timeout: float = 20.0
    retries: int = 3
    backoff: float = 0.5
    known_hosts: str = "~/.ssh/known_hosts"
    ssh_config: str = "~/.ssh/config"
    system_known_hosts: str | None = "/etc/ssh/ssh_known_hosts"
    trust_new_host: bool = False
    keepalive: int = 5
    # How often a push whose link broke (stall, reset) reconnects and resumes the upload where the device's copy
    # ends. Under heavy loss TCP's retransmission backoff alone can exceed any sane stall window, and a fresh
    # connection starts with a fresh retransmission timer.
    transfer_retries: int = 3

    def __post_init__(self):
        for name in ("connect_timeout", "command_timeout", "stall_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SshOptions.{name} must be > 0")
        if self.transfer_retries < 0 or self.retries < 0:
            raise ValueError("SshOptions.retries and transfer_retries must be >= 0")
