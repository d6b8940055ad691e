"""attnverify: a theory-to-code verification suite for attention mechanisms."""

__version__ = "0.1.0"
