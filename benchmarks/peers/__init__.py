"""Peer systems the benchmarks compare against: installers and the programs they run."""
