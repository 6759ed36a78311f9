"""The paper's analysis and the book's publishing: statistics, theory, FLOPs, figures, tables and the paper's printed numbers."""
