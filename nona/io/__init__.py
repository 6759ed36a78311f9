"""Files of the companion: where it reads and writes, atomic writes, and the provenance stamped on every output."""
