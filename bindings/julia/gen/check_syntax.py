#!/usr/bin/env python3
"""Parses every .jl file of the binding with the tree-sitter Julia grammar and fails on any
syntax error. Julia itself cannot be installed on these machines; this is the check that runs."""
import pathlib
import sys

import tree_sitter
import tree_sitter_julia

ROOT = pathlib.Path(__file__).resolve().parent.parent


def errors(node, path, out):
    if node.type == "ERROR" or node.is_missing:
        line, col = node.start_point
        out.append(f"{path}:{line + 1}:{col + 1}: syntax error near {node.text[:40]!r}")
    for child in node.children:
        errors(child, path, out)


def main():
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_julia.language()))
    problems = []
    files = sorted(ROOT.rglob("*.jl"))
    for path in files:
        tree = parser.parse(path.read_bytes())
        errors(tree.root_node, path.relative_to(ROOT), problems)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"julia syntax: {len(files)} files, {len(problems)} errors")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
