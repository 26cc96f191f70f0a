"""diskname: report the guest's name of every VM disk up to management."""

__version__ = "0.1.0"
