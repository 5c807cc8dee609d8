import os
import sys

# Triton kernels run through Triton's CPU interpreter in the test suite (no GPU in CI).
os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
