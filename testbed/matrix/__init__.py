"""The nightly matrix as data: cells (topology x kernel config x accel), stable shards."""
