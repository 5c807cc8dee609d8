"""Source rules the Triton versions we run on need, checked without a GPU."""

import ast
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[2] / "kernels"


def test_no_nested_tuple_assignment_targets():
    # Triton 3.6 hashes a kernel's dependencies by walking their source and fails with "unhashable type:
    # 'list'" on `a, (b, c) = ...` (seen on an H100); the CPU interpreter never hashes, so only this catches it
    bad = []
    for path in sorted(KERNELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.For)
                else []
            )
            for t in targets:
                if isinstance(t, (ast.Tuple, ast.List)) and any(
                    isinstance(e, (ast.Tuple, ast.List)) for e in t.elts
                ):
                    bad.append(f"{path.name}:{node.lineno}: {ast.unparse(t)}")
    assert not bad, bad
