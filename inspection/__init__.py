"""steel-inspect runtime: frames, transport, inference, records and outputs.

The runtime never imports torch; see tests/test_no_torch_in_runtime.py.
"""

__version__ = "0.1.0"
