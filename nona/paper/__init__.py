"""The paper's analysis and the book's publishing.

Statistics, theory, FLOPs, figures, tables and the paper's printed numbers.
"""
