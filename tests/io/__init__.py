"""Tests of reading and writing: `modeling_fmrilm/io/` (parcellated files, NIfTI, BIDS, the embedded cohort,
malformed input) and the safe writers (`atomic.py`, `locking.py`, `window_store.py`)."""
